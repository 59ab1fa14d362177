# batchflow — batch-processing workflows inside PostgreSQL
#
# Built with PGXS.  The install script is assembled from the hand-written
# parts in sql/parts/ (one file per subsystem, applied in name order) so that
# each subsystem's tables, views and functions live next to each other.
#
# Releases: the install script of every earlier release is kept as it was
# shipped (sql/batchflow--0.1.0.sql), and each release adds one upgrade script
# sql/batchflow--OLD--NEW.sql.  A TAP test installs the old release, runs
# ALTER EXTENSION batchflow UPDATE and compares the schema with a fresh
# install of EXTVERSION.

EXTENSION  = batchflow
EXTVERSION = 0.2.0

MODULE_big = batchflow
OBJS       = $(patsubst %.c,%.o,$(sort $(wildcard src/*.c)))

DATA_built = sql/$(EXTENSION)--$(EXTVERSION).sql
DATA       = $(filter-out $(DATA_built),$(wildcard sql/$(EXTENSION)--*.sql))

PG_CPPFLAGS = -I$(srcdir)/src -DBF_VERSION=\"$(EXTVERSION)\"
# -MMD -MP: each object records the headers it includes (src/*.d), so a
# change to one module's header rebuilds only the files that include it.
PG_CFLAGS   = -std=gnu99 -Wall -Wextra -Werror -Wno-unused-parameter \
              -Wno-missing-field-initializers -Wno-sign-compare -MMD -MP
SHLIB_LINK  = -lcurl

# Tests: every file found is run; no list to keep in sync.
TESTS      = $(sort $(wildcard test/sql/*.sql))
REGRESS    = $(patsubst test/sql/%.sql,%,$(TESTS))
REGRESS_OPTS = --inputdir=test --outputdir=test/out --load-extension=$(EXTENSION)
ISOLATION  = $(patsubst test/specs/%.spec,%,$(sort $(wildcard test/specs/*.spec)))
ISOLATION_OPTS = --inputdir=test --outputdir=test/out-isolation --load-extension=$(EXTENSION)
TAP_TESTS  = 1
PROVE_TESTS = $(sort $(wildcard test/t/*.pl))

EXTRA_CLEAN = test/out test/out-isolation tmp_check $(OBJS:.o=.d)

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

$(DATA_built): $(sort $(wildcard sql/parts/*.sql))
	cat $^ > $@

-include $(OBJS:.o=.d)
