/*
 * bench/http_sleep_server.c - the fixed-latency HTTP endpoint of
 * bench/http.sh in C (one epoll loop), for when the Python one
 * (bench/http_sleep_server.py) is the limit, and a load client to measure
 * it alone.
 *
 *   cc -O2 -o srv bench/http_sleep_server.c
 *   srv serve PORT_FILE        bind 127.0.0.1 on a free port, write the
 *                              port to PORT_FILE, serve until killed
 *   srv load HOST PORT PATH N CAP
 *                              N GET requests of PATH, CAP at a time over
 *                              CAP keep-alive connections; prints
 *                              "requests N cap CAP seconds S rate R"
 *
 * Endpoints as in the Python server: /sleep?ms=N (answer after N ms,
 * default 100; counts requests and the peak waiting at once), /stats
 * (JSON: requests, current, peak, paths./sleep), /reset.  Any method; a
 * request body (Content-Length) is read and ignored.  HTTP/1.1 keep-alive,
 * one request at a time per connection.  Only for benchmarks on 127.0.0.1.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAXCONN 65536
#define BUFSZ 16384

typedef struct Conn
{
	int			fd;
	int			used;			/* bytes in buf */
	long		need;			/* body bytes still to skip */
	double		due;			/* answer a /sleep at this time; 0: none */
	char		buf[BUFSZ];
} Conn;

static Conn *conns[MAXCONN];
static int	maxfd;
static long nrequests, ncurrent, npeak;

/* Seconds on the monotonic clock. */
static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Send a whole response (small: the socket buffer takes it at once). */
static void
reply(int fd, int status, const char *body)
{
	char		out[512];
	int			n = snprintf(out, sizeof(out),
							 "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
							 "Content-Length: %zu\r\n\r\n%s",
							 status, status == 200 ? "OK" : "Not Found", strlen(body), body);

	if (write(fd, out, n) != n)
		perror("write");
}

static void
drop(int epfd, Conn *c)
{
	if (c->due > 0)
		ncurrent--;
	epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	conns[c->fd] = NULL;
	free(c);
}

/* Handle every complete request in c->buf; false if the connection must go. */
static int
serve_input(Conn *c)
{
	for (;;)
	{
		char	   *end;
		char	   *cl;
		char		path[1024];
		int			head;
		long		ms = 100;

		if (c->due > 0)
			return 1;			/* one request at a time */
		if (c->need > 0)
		{
			long		skip = c->need < c->used ? c->need : c->used;

			memmove(c->buf, c->buf + skip, c->used - skip);
			c->used -= skip;
			c->need -= skip;
			if (c->need > 0)
				return 1;
		}
		c->buf[c->used] = '\0';
		end = strstr(c->buf, "\r\n\r\n");
		if (end == NULL)
			return c->used < BUFSZ - 1;
		head = end + 4 - c->buf;
		if (sscanf(c->buf, "%*s %1023s", path) != 1)
			return 0;
		cl = strcasestr(c->buf, "\r\ncontent-length:");
		c->need = (cl && cl < end) ? atol(cl + 17) : 0;
		memmove(c->buf, c->buf + head, c->used - head);
		c->used -= head;
		if (strncmp(path, "/sleep", 6) == 0)
		{
			char	   *q = strstr(path, "ms=");

			if (q)
				ms = atol(q + 3);
			nrequests++;
			if (++ncurrent > npeak)
				npeak = ncurrent;
			c->due = now() + ms / 1000.0;
		}
		else if (strncmp(path, "/stats", 6) == 0)
		{
			char		body[256];

			snprintf(body, sizeof(body),
					 "{\"requests\": %ld, \"current\": %ld, \"peak\": %ld, \"paths\": {\"/sleep\": %ld}}",
					 nrequests, ncurrent, npeak, nrequests);
			reply(c->fd, 200, body);
		}
		else if (strncmp(path, "/reset", 6) == 0)
		{
			nrequests = npeak = 0;
			ncurrent = 0;
			for (int i = 0; i <= maxfd; i++)
				if (conns[i] && conns[i]->due > 0)
					ncurrent++;
			reply(c->fd, 200, "{\"ok\": true}");
		}
		else
			reply(c->fd, 404, "{\"error\": \"no such endpoint\"}");
	}
}

static int
serve(const char *port_file)
{
	int			lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	int			epfd = epoll_create1(0);
	int			one = 1;
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t	alen = sizeof(a);
	struct epoll_event ev = {.events = EPOLLIN};
	char		tmp[4096];
	FILE	   *f;

	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(lfd, (struct sockaddr *) &a, sizeof(a)) != 0 || listen(lfd, 4096) != 0 ||
		getsockname(lfd, (struct sockaddr *) &a, &alen) != 0)
	{
		perror("bind");
		return 1;
	}
	snprintf(tmp, sizeof(tmp), "%s.tmp", port_file);
	f = fopen(tmp, "w");
	fprintf(f, "%d", ntohs(a.sin_port));
	fclose(f);
	rename(tmp, port_file);
	ev.data.fd = lfd;
	epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &ev);

	for (;;)
	{
		struct epoll_event evs[256];
		double		t = now();
		double		next = t + 1;
		int			timeout;
		int			n;

		/* Answer the sleeps that are due; find the next due time. */
		for (int i = 0; i <= maxfd; i++)
		{
			Conn	   *c = conns[i];

			if (c == NULL || c->due == 0)
				continue;
			if (c->due <= t)
			{
				c->due = 0;
				ncurrent--;
				reply(c->fd, 200, "{\"ok\": true}");
				if (!serve_input(c))
					drop(epfd, c);
			}
			else if (c->due < next)
				next = c->due;
		}
		timeout = (int) ((next - now()) * 1000) + 1;
		n = epoll_wait(epfd, evs, 256, timeout < 0 ? 0 : timeout);
		for (int i = 0; i < n; i++)
		{
			int			fd = evs[i].data.fd;

			if (fd == lfd)
			{
				int			cfd;

				while ((cfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0)
				{
					Conn	   *c;

					if (cfd >= MAXCONN)
					{
						close(cfd);
						continue;
					}
					c = calloc(1, sizeof(Conn));
					c->fd = cfd;
					conns[cfd] = c;
					if (cfd > maxfd)
						maxfd = cfd;
					setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
					ev.events = EPOLLIN;
					ev.data.fd = cfd;
					epoll_ctl(epfd, EPOLL_CTL_ADD, cfd, &ev);
				}
				continue;
			}
			if (conns[fd] == NULL)
				continue;
			{
				Conn	   *c = conns[fd];
				ssize_t		r = read(fd, c->buf + c->used, BUFSZ - 1 - c->used);

				if (r <= 0)
				{
					if (r < 0 && (errno == EAGAIN || errno == EINTR))
						continue;
					drop(epfd, c);
					continue;
				}
				c->used += r;
				if (!serve_input(c))
					drop(epfd, c);
			}
		}
	}
}

/* The load client: CAP connections, each sending its share of N requests. */
static int
load(const char *host, int port, const char *path, long total, int cap)
{
	int			epfd = epoll_create1(0);
	char		req[2048];
	int			reqlen = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: %s:%d\r\n\r\n", path, host, port);
	long		sent = 0, done = 0;
	double		t0 = now();
	int		   *fds = calloc(cap, sizeof(int));
	char		buf[BUFSZ];

	for (int i = 0; i < cap && sent < total; i++)
	{
		struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
		struct epoll_event ev = {.events = EPOLLIN};
		int			one = 1;

		inet_pton(AF_INET, host, &a.sin_addr);
		fds[i] = socket(AF_INET, SOCK_STREAM, 0);
		if (connect(fds[i], (struct sockaddr *) &a, sizeof(a)) != 0)
		{
			perror("connect");
			return 1;
		}
		setsockopt(fds[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		ev.data.fd = fds[i];
		epoll_ctl(epfd, EPOLL_CTL_ADD, fds[i], &ev);
		if (write(fds[i], req, reqlen) != reqlen)
			return 1;
		sent++;
	}
	while (done < total)
	{
		struct epoll_event evs[256];
		int			n = epoll_wait(epfd, evs, 256, 10000);

		if (n <= 0)
		{
			fprintf(stderr, "load: no answer for 10 s\n");
			return 1;
		}
		for (int i = 0; i < n; i++)
		{
			int			fd = evs[i].data.fd;

			/* Responses are tiny JSON objects: read until the closing brace. */
			for (;;)
			{
				ssize_t		r = read(fd, buf, sizeof(buf));

				if (r <= 0)
					return 1;
				if (buf[r - 1] == '}')
					break;
			}
			done++;
			if (sent < total)
			{
				if (write(fd, req, reqlen) != reqlen)
					return 1;
				sent++;
			}
		}
	}
	printf("requests %ld cap %d seconds %.3f rate %.1f\n", total, cap, now() - t0, total / (now() - t0));
	return 0;
}

int
main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "serve") == 0)
		return serve(argv[2]);
	if (argc == 7 && strcmp(argv[1], "load") == 0)
		return load(argv[2], atoi(argv[3]), argv[4], atol(argv[5]), atoi(argv[6]));
	fprintf(stderr, "usage: %s serve PORT_FILE | load HOST PORT PATH N CAP\n", argv[0]);
	return 2;
}
