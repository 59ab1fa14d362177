/*-------------------------------------------------------------------------
 *
 * db_shareout.c
 *	  The launcher's share-out of the worker pool among databases: which
 *	  free slot to lend to which database, and which worker to ask for its
 *	  slot back.
 *
 *	  A pure function of the table of databases and slot loans that
 *	  databases.c hands it under that table's LWLock (held exclusively for
 *	  the whole share-out, so the table does not change under it): it reads
 *	  and changes only that table, reads no clock (the caller passes now)
 *	  and signals no process (it returns the pids to signal, which the
 *	  caller signals after releasing the lock).  So the lock's owner stays
 *	  databases.c, and this file can be read as the policy alone.
 *
 *	  The policy: wanting databases get free slots first, the one with
 *	  fewest workers first (ties in turn, from where the last share-out
 *	  stopped), up to an even share of the pool at once; a database whose
 *	  first-visit recovery is not done gets one worker, which runs it
 *	  alone.  With no free slot, the database below its share takes back
 *	  what it lacks: idle workers of other databases first, busy ones only
 *	  from a database above the even share.  A worker asked to leave hands
 *	  its slot back after its current transaction, so no item is ever
 *	  handed over.  When one database is served (keep_full), every free
 *	  slot is lent to it.
 *
 * IDENTIFICATION
 *	  src/db_shareout.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/timestamp.h"

#include "databases.h"
#include "db_shareout.h"

/* The entry of dboid in the table, or NULL. */
static BfDbEntry *
shareout_find(BfDbTable *t, Oid dboid)
{
	for (int i = 0; i < BF_MAX_DATABASES; i++)
		if (t->dbs[i].dboid == dboid)
			return &t->dbs[i];
	return NULL;
}

/*
 * Share the pool out.  alive[s]: the worker lent slot s still runs (or is
 * starting).  Fills orders with the slots to start a worker for (lent to
 * their database here) and returns how many; fills to_signal with the
 * pids of the workers asked to hand their slot back (*nsignal of them).
 * keep_full: lend every free slot (one database served: its pool stays
 * full).
 */
int
bf_shareout(BfDbTable *t, const bool *alive, TimestampTz now, bool keep_full,
			BfStartOrder *orders, pid_t *to_signal, int *nsignal)
{
	int			nslots;
	int			norders = 0;
	int			nworkers[BF_MAX_DATABASES] = {0};
	int			nidle[BF_MAX_DATABASES] = {0};
	int			nexiting[BF_MAX_DATABASES] = {0};
	int			active = 0;
	int			share;
	int			pending_exits = 0;

	*nsignal = 0;
	nslots = t->nslots;

	/* Slots whose worker is gone are free again. */
	for (int s = 0; s < nslots; s++)
	{
		BfSlotLend *l = &t->slots[s];

		if (OidIsValid(l->dboid) && !alive[s])
		{
			BfDbEntry  *e = shareout_find(t, l->dboid);

			if (l->pid == 0 && e != NULL)
				e->backoff_until = TimestampTzPlusMilliseconds(now, 1000);
			memset(l, 0, sizeof(BfSlotLend));
		}
	}

	/* Who holds what. */
	for (int s = 0; s < nslots; s++)
	{
		BfSlotLend *l = &t->slots[s];

		if (!OidIsValid(l->dboid))
			continue;
		for (int i = 0; i < BF_MAX_DATABASES; i++)
		{
			if (t->dbs[i].dboid != l->dboid)
				continue;
			nworkers[i]++;
			if (l->exit_requested)
			{
				nexiting[i]++;
				pending_exits++;
			}
			else if (l->idle && l->pid != 0)
				nidle[i]++;
		}
	}
	for (int i = 0; i < BF_MAX_DATABASES; i++)
	{
		BfDbEntry  *e = &t->dbs[i];

		if (OidIsValid(e->dboid) && !e->blocked && (nworkers[i] > 0 || e->wanted))
			active++;
	}
	share = Max(1, nslots / Max(1, active));

	/*
	 * Serve the wanting databases, fewest workers first (ties: in turn
	 * from where the last share-out stopped).
	 */
	for (;;)
	{
		int			best = -1;
		int			free_slot = -1;

		for (int k = 0; k < BF_MAX_DATABASES; k++)
		{
			int			i = (*t->rr + k) % BF_MAX_DATABASES;
			BfDbEntry  *e = &t->dbs[i];

			if (!OidIsValid(e->dboid) || !e->wanted || e->blocked ||
				e->backoff_until > now)
				continue;
			/* Not before its recovery: one worker does that alone. */
			if (!e->recovered && nworkers[i] > 0)
				continue;
			if (best < 0 || nworkers[i] - nexiting[i] < nworkers[best] - nexiting[best])
				best = i;
		}
		if (best < 0)
			break;

		for (int s = 0; s < nslots && free_slot < 0; s++)
			if (!OidIsValid(t->slots[s].dboid))
				free_slot = s;
		if (free_slot >= 0)
		{
			/*
			 * Up to its even share at once (workers that find nothing to
			 * do idle out, or are the first taken back); only one for the
			 * recovery.
			 */
			int			grant = t->dbs[best].recovered ?
				Max(1, share - nworkers[best]) : 1;

			for (int s = free_slot; s < nslots && grant > 0; s++)
			{
				BfSlotLend *l = &t->slots[s];

				if (OidIsValid(l->dboid))
					continue;
				memset(l, 0, sizeof(BfSlotLend));
				l->dboid = t->dbs[best].dboid;
				orders[norders].slotno = s;
				orders[norders].dboid = l->dboid;
				norders++;
				nworkers[best]++;
				grant--;
			}
			t->dbs[best].wanted = false;
			*t->rr = (best + 1) % BF_MAX_DATABASES;
			continue;
		}

		/*
		 * No free slot: take back what the database lacks of its share (at
		 * least one).  Idle workers of other databases first; busy ones
		 * only from a database above the even share, for a database below
		 * it.  Each hands its slot back after its current transaction.
		 */
		while (pending_exits < Max(1, share - nworkers[best]))
		{
			int			victim = -1;
			int			victim_db = -1;

			for (int s = 0; s < nslots; s++)
			{
				BfSlotLend *l = &t->slots[s];

				for (int i = 0; i < BF_MAX_DATABASES; i++)
				{
					if (i == best || t->dbs[i].dboid != l->dboid ||
						!OidIsValid(l->dboid) || l->exit_requested)
						continue;
					if (l->idle && l->pid != 0)
					{
						if (victim < 0 || !t->slots[victim].idle ||
							nworkers[i] - nexiting[i] > nworkers[victim_db] - nexiting[victim_db])
						{
							victim = s;
							victim_db = i;
						}
					}
					else if ((victim < 0 || !t->slots[victim].idle) &&
							 nworkers[i] - nexiting[i] > share &&
							 nworkers[best] < share &&
							 (victim < 0 ||
							  nworkers[i] - nexiting[i] > nworkers[victim_db] - nexiting[victim_db]))
					{
						victim = s;
						victim_db = i;
					}
				}
			}
			if (victim < 0)
				break;
			t->slots[victim].exit_requested = true;
			nexiting[victim_db]++;
			pending_exits++;
			if (t->slots[victim].pid != 0)
				to_signal[(*nsignal)++] = t->slots[victim].pid;
		}
		break;
	}

	/* One database served: its pool stays full. */
	if (keep_full)
	{
		for (int i = 0; i < BF_MAX_DATABASES; i++)
		{
			BfDbEntry  *e = &t->dbs[i];

			if (!OidIsValid(e->dboid) || e->blocked || e->backoff_until > now)
				continue;
			if (!e->recovered && nworkers[i] > 0)
				continue;
			for (int s = 0; s < nslots; s++)
			{
				BfSlotLend *l = &t->slots[s];

				if (OidIsValid(l->dboid))
					continue;
				l->dboid = e->dboid;
				orders[norders].slotno = s;
				orders[norders].dboid = e->dboid;
				norders++;
				nworkers[i]++;
				if (!e->recovered)
					break;
			}
			e->wanted = false;
			break;
		}
	}
	return norders;
}

