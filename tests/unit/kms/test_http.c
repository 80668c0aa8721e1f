// SPDX-License-Identifier: MIT
/*
 * Unit tests for kms/http.c against tests/unit/kms/http_peer.py, a real
 * HTTP/1.1 server that injects faults: retries, deadlines, the breaker,
 * keep-alive reuse (connections counted server-side) and TLS verification
 * with a self-signed certificate made by the openssl CLI.
 */

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "kms/http.h"
#include "kms/json.h"
#include "kms_test_util.h"

struct peer {
	pid_t pid;
	int stdin_fd;
	int port;
	char base[64];
};

static struct peer plain, tls;
static char cert_path[300], key_path[300];

static void peer_start(struct peer *p, bool with_tls)
{
	const char *src = getenv("ENVELOPEFS_SOURCE_ROOT");
	char script[512], line[32];
	int in[2], out[2];
	ssize_t n;

	snprintf(script, sizeof(script), "%s/tests/unit/kms/http_peer.py", src ? src : ".");
	/* Close-on-exec: a later peer must not inherit this one's stdin, or EOF never comes. */
	if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0) {
		perror("pipe");
		exit(2);
	}
	p->pid = fork();
	if (p->pid == 0) {
		dup2(in[0], 0);
		dup2(out[1], 1);
		close(in[1]);
		close(out[0]);
		if (with_tls)
			execl(TEST_PYTHON, TEST_PYTHON, script, "--cert", cert_path, "--key",
			      key_path, (char *)NULL);
		else
			execl(TEST_PYTHON, TEST_PYTHON, script, (char *)NULL);
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	p->stdin_fd = in[1];
	/* Read up to the newline: the port may come in more than one write. */
	n = 0;
	while ((size_t)n < sizeof(line) - 1) {
		ssize_t r = read(out[0], line + n, 1);

		if (r <= 0 || line[n] == '\n')
			break;
		n++;
	}
	close(out[0]);
	if (n <= 0) {
		fprintf(stderr, "http_peer.py did not start\n");
		exit(2);
	}
	line[n] = '\0';
	p->port = atoi(line);
	snprintf(p->base, sizeof(p->base), "%s://127.0.0.1:%d", with_tls ? "https" : "http",
		 p->port);
}

static void peer_stop(struct peer *p)
{
	if (p->pid <= 0)
		return;
	close(p->stdin_fd);
	waitpid(p->pid, NULL, 0);
	p->pid = 0;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static struct http_client *client_new(const struct http_settings *s)
{
	struct http_client *c = NULL;
	char err[256];
	int rc = http_client_new(s, &c, err, sizeof(err));

	if (rc < 0) {
		fprintf(stderr, "http_client_new: %s\n", err);
		exit(2);
	}
	return c;
}

/* call - one request to @base@path; returns rc, status in *@status, body copied to @body (may be NULL). */
static int call(struct http_client *c, const char *method, const char *base, const char *path,
		const char *body, long *status, char *out, size_t out_len)
{
	struct http_request req = { .method = method, .body = body, .body_len = body ? strlen(body) : 0 };
	struct http_response resp;
	char url[256], err[512];
	int rc;

	snprintf(url, sizeof(url), "%s%s", base, path);
	req.url = url;
	rc = http_request(c, &req, &resp, err, sizeof(err));
	if (status)
		*status = resp.status;
	if (out && out_len) {
		/* Cut to fit, on purpose (a bounded copy: -O3 sees through snprintf and warns). */
		const char *text = rc == 0 && resp.body ? (const char *)resp.body : err;
		size_t n = strnlen(text, out_len - 1);

		memcpy(out, text, n);
		out[n] = '\0';
	}
	http_response_free(&resp);
	return rc;
}

/* peer_int - an integer from a JSON answer of the plain peer (its counters). */
static int64_t peer_int(const char *path, const char *field)
{
	struct http_settings s = { 0 };
	struct http_client *c = client_new(&s);
	struct json_doc *doc = NULL;
	char body[256];
	int64_t v = -1;
	long status;

	if (call(c, "GET", plain.base, path, NULL, &status, body, sizeof(body)) == 0 &&
	    json_parse(body, strlen(body), &doc) == 0)
		json_get_int(doc, field, &v);
	json_free(doc);
	http_client_free(c);
	return v;
}

static void test_get_and_post(void)
{
	struct http_settings s = { 0 };
	struct http_client *c = client_new(&s);
	const char *hdrs[] = { "X-Test-Token: t0ken", "Content-Type: application/json", NULL };
	struct http_request req = { .method = "POST", .headers = hdrs, .body = "{\"a\":\"b\"}", .body_len = 9 };
	struct http_response resp;
	struct json_doc *doc = NULL;
	char url[128], err[256], v[64];
	long status;
	int64_t n;

	CHECK_EQ_INT(call(c, "GET", plain.base, "/ok", NULL, &status, NULL, 0), 0);
	CHECK_EQ_INT(status, 200);

	snprintf(url, sizeof(url), "%s/echo", plain.base);
	req.url = url;
	REQUIRE(http_request(c, &req, &resp, err, sizeof(err)) == 0);
	CHECK_EQ_INT(resp.status, 200);
	REQUIRE(resp.body && json_parse((const char *)resp.body, resp.len, &doc) == 0);
	CHECK_EQ_INT(json_get_string(doc, "method", v, sizeof(v), NULL), 0);
	CHECK(strcmp(v, "POST") == 0);
	CHECK_EQ_INT(json_get_int(doc, "len", &n), 0);
	CHECK_EQ_INT(n, 9);
	CHECK_EQ_INT(json_get_string(doc, "body", v, sizeof(v), NULL), 0);
	CHECK(strcmp(v, "{\"a\":\"b\"}") == 0);
	CHECK_EQ_INT(json_get_string(doc, "token", v, sizeof(v), NULL), 0);
	CHECK(strcmp(v, "t0ken") == 0);
	json_free(doc);
	http_response_free(&resp);
	CHECK(resp.body == NULL && resp.len == 0);
	http_client_free(c);
}

static void test_sigv4_headers(void)
{
	struct http_settings s = { 0 };
	struct http_client *c = client_new(&s);
	struct http_request req = { .method = "POST", .body = "{}", .body_len = 2,
				    .aws_sigv4 = "aws:amz:us-east-1:kms", .userpwd = "AKIDEXAMPLE:secret" };
	struct http_response resp;
	struct json_doc *doc = NULL;
	char url[128], err[256];
	bool b;

	snprintf(url, sizeof(url), "%s/echo", plain.base);
	req.url = url;
	REQUIRE(http_request(c, &req, &resp, err, sizeof(err)) == 0);
	REQUIRE(json_parse((const char *)resp.body, resp.len, &doc) == 0);
	CHECK(json_get_bool(doc, "auth", &b) == 0 && b);
	CHECK(json_get_bool(doc, "amzdate", &b) == 0 && b);
	json_free(doc);
	http_response_free(&resp);
	http_client_free(c);
}

static void test_retries_retryable_statuses(void)
{
	struct http_settings s = { .backoff_base_ms = 5, .max_attempts = 4 };
	struct http_client *c = client_new(&s);
	struct http_stats st;
	long status;

	CHECK_EQ_INT(call(c, "GET", plain.base, "/fail/r503/503/2", NULL, &status, NULL, 0), 0);
	CHECK_EQ_INT(status, 200);
	CHECK_EQ_INT(peer_int("/hits/r503", "hits"), 3);
	CHECK_EQ_INT(call(c, "POST", plain.base, "/fail/r429/429/3", "{}", &status, NULL, 0), 0);
	CHECK_EQ_INT(status, 200);
	CHECK_EQ_INT(peer_int("/hits/r429", "hits"), 4);
	http_client_stats(c, &st);
	CHECK_EQ_INT(st.calls, 2);
	CHECK_EQ_INT(st.retries, 5);
	CHECK_EQ_INT(st.attempts, 7);
	CHECK_EQ_INT(st.failures, 0);

	/* Out of attempts: -EAGAIN, the last answer kept. */
	CHECK_EQ_INT(call(c, "GET", plain.base, "/fail/r5034/503/10", NULL, &status, NULL, 0), -EAGAIN);
	CHECK_EQ_INT(status, 503);
	CHECK_EQ_INT(peer_int("/hits/r5034", "hits"), 4);
	http_client_stats(c, &st);
	CHECK_EQ_INT(st.failures, 1);
	http_client_free(c);
}

/* Retry-After: the next attempt waits that long, in seconds or to an HTTP date,
 * unless the wait passes the deadline: then the call ends at once. */
static void test_retry_after_is_honoured(void)
{
	struct http_settings s = { .backoff_base_ms = 5, .deadline_ms = 8000 };
	struct http_client *c = client_new(&s);
	char err[512];
	long status;
	double t;

	t = now_s();
	CHECK_EQ_INT(call(c, "GET", plain.base, "/wait/ra1/429/1/1", NULL, &status, NULL, 0), 0);
	CHECK(now_s() - t >= 1.0);
	CHECK_EQ_INT(status, 200);
	CHECK_EQ_INT(peer_int("/hits/ra1", "hits"), 2);

	/* An HTTP date 3 s ahead: at least the 2 whole seconds it still is away. */
	t = now_s();
	CHECK_EQ_INT(call(c, "GET", plain.base, "/wait/radate/503/1/d3", NULL, &status, NULL, 0), 0);
	CHECK(now_s() - t >= 1.5);
	CHECK_EQ_INT(peer_int("/hits/radate", "hits"), 2);

	/* 60 s is past the 8 s deadline: one attempt, no sleeping, and the error says why. */
	t = now_s();
	CHECK_EQ_INT(call(c, "GET", plain.base, "/wait/ralong/429/5/60", NULL, &status, err,
			  sizeof(err)),
		     -EAGAIN);
	CHECK(now_s() - t < 1.0);
	CHECK_EQ_INT(status, 429);
	CHECK(strstr(err, "retried in 60 s, past the deadline") != NULL);
	CHECK_EQ_INT(peer_int("/hits/ralong", "hits"), 1);
	http_client_free(c);
}

static void test_no_retry_on_client_errors(void)
{
	struct http_settings s = { .backoff_base_ms = 5 };
	struct http_client *c = client_new(&s);
	struct http_stats st;
	long status;

	CHECK_EQ_INT(call(c, "GET", plain.base, "/fail/n400/400/5", NULL, &status, NULL, 0), 0);
	CHECK_EQ_INT(status, 400);
	CHECK_EQ_INT(call(c, "GET", plain.base, "/fail/n403/403/5", NULL, &status, NULL, 0), 0);
	CHECK_EQ_INT(status, 403);
	/* AWS throttling is a 400: without the provider's classifier it is final. */
	CHECK_EQ_INT(call(c, "GET", plain.base, "/fail/n400t/400t/5", NULL, &status, NULL, 0), 0);
	CHECK_EQ_INT(status, 400);
	CHECK_EQ_INT(peer_int("/hits/n400", "hits"), 1);
	CHECK_EQ_INT(peer_int("/hits/n403", "hits"), 1);
	CHECK_EQ_INT(peer_int("/hits/n400t", "hits"), 1);
	http_client_stats(c, &st);
	CHECK_EQ_INT(st.retries, 0);
	CHECK_EQ_INT(st.failures, 3);
	/* A 4xx proves the service up: the breaker stays closed. */
	CHECK_EQ_INT(st.breaker, HTTP_BREAKER_CLOSED);
	http_client_free(c);
}

static enum http_verdict aws_like_classify(void *arg, const struct http_response *resp)
{
	int *calls = arg;

	(*calls)++;
	if (resp->status == 400 && resp->body &&
	    strstr((const char *)resp->body, "ThrottlingException"))
		return HTTP_THROTTLED;
	return resp->status >= 500 ? HTTP_FAULT : HTTP_FINAL;
}

static void test_classifier_decides(void)
{
	int classified = 0;
	struct http_settings s = { .backoff_base_ms = 5, .classify = aws_like_classify,
				   .classify_arg = &classified };
	struct http_client *c = client_new(&s);
	long status;

	CHECK_EQ_INT(call(c, "GET", plain.base, "/fail/c400t/400t/2", NULL, &status, NULL, 0), 0);
	CHECK_EQ_INT(status, 200);
	CHECK_EQ_INT(peer_int("/hits/c400t", "hits"), 3);
	CHECK_EQ_INT(classified, 3);
	/* 429 is not retryable for this classifier: one hit. */
	CHECK_EQ_INT(call(c, "GET", plain.base, "/fail/c429/429/2", NULL, &status, NULL, 0), 0);
	CHECK_EQ_INT(status, 429);
	CHECK_EQ_INT(peer_int("/hits/c429", "hits"), 1);
	http_client_free(c);
}

/* What the client's on_state hook reported: its state_arg points at one of these. */
struct state_changes {
	int downs, ups;
};

static void on_state(void *arg, bool up)
{
	struct state_changes *seen = arg;

	if (up)
		seen->ups++;
	else
		seen->downs++;
}

/*
 * Throttling is not an outage: throttled answers are retried past
 * max_attempts until the deadline, counted, and never open the breaker, even
 * with a threshold of one failed call.
 */
static void test_throttling_is_not_an_outage(void)
{
	struct state_changes seen = { 0 };
	struct http_settings s = { .backoff_base_ms = 5, .backoff_max_ms = 40, .max_attempts = 2,
				   .deadline_ms = 500, .breaker_threshold = 1,
				   .on_state = on_state, .state_arg = &seen };
	struct http_client *c = client_new(&s);
	struct http_stats st;
	int64_t before;
	double t0, dt;
	long status;
	char msg[512];
	int i;

	/* Five throttled answers, then a real one: more than max_attempts attempts, and success. */
	CHECK_EQ_INT(call(c, "GET", plain.base, "/fail/t429/429/5", NULL, &status, NULL, 0), 0);
	CHECK_EQ_INT(status, 200);
	CHECK_EQ_INT(peer_int("/hits/t429", "hits"), 6);
	http_client_stats(c, &st);
	CHECK_EQ_INT(st.throttled, 5);
	CHECK_EQ_INT(st.retries, 5);
	CHECK_EQ_INT(st.failures, 0);

	/* Throttled for good: the deadline ends each call with -EAGAIN; the breaker stays closed. */
	for (i = 0; i < 3; i++) {
		before = peer_int("/hits/always", "hits");
		t0 = now_s();
		CHECK_EQ_INT(call(c, "GET", plain.base, "/always/429", NULL, &status, msg, sizeof(msg)),
			     -EAGAIN);
		dt = now_s() - t0;
		CHECK(dt >= 0.4 && dt < 1.1);
		CHECK(strstr(msg, "throttled") != NULL);
		/* Every call reached the server: nothing failed fast. */
		CHECK(peer_int("/hits/always", "hits") - before > 2);
	}
	http_client_stats(c, &st);
	CHECK_EQ_INT(st.breaker, HTTP_BREAKER_CLOSED);
	CHECK_EQ_INT(st.breaker_opens, 0);
	CHECK_EQ_INT(st.fast_fails, 0);
	CHECK_EQ_INT(st.failures, 3);
	CHECK(st.throttled > 5 + 3 * 2);
	CHECK_EQ_INT(seen.downs, 0);

	/* The same client, one real fault: the threshold of one opens the breaker. */
	CHECK_EQ_INT(call(c, "GET", plain.base, "/always/503", NULL, &status, NULL, 0), -EAGAIN);
	http_client_stats(c, &st);
	CHECK_EQ_INT(st.breaker, HTTP_BREAKER_OPEN);
	CHECK_EQ_INT(seen.downs, 1);
	http_client_free(c);
}

/* closed_port - a loopback port with nothing listening (bound then closed). */
static int closed_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	bind(fd, (struct sockaddr *)&a, sizeof(a));
	getsockname(fd, (struct sockaddr *)&a, &len);
	close(fd);
	return ntohs(a.sin_port);
}

static void test_connection_refused_is_retried(void)
{
	struct http_settings s = { .backoff_base_ms = 10, .max_attempts = 3, .breaker_threshold = 100 };
	struct http_client *c = client_new(&s);
	struct http_stats st;
	char base[64], msg[512];
	double t0 = now_s();

	snprintf(base, sizeof(base), "http://127.0.0.1:%d", closed_port());
	CHECK_EQ_INT(call(c, "GET", base, "/ok", NULL, NULL, msg, sizeof(msg)), -EAGAIN);
	CHECK(strstr(msg, "after 3 attempts") != NULL);
	http_client_stats(c, &st);
	CHECK_EQ_INT(st.attempts, 3);
	CHECK_EQ_INT(st.retries, 2);
	CHECK(now_s() - t0 < 1.0);
	http_client_free(c);
}

static void test_deadline_bounds_everything(void)
{
	/* Always 503 with long backoff: the deadline, not the attempt count, ends the call. */
	struct http_settings s = { .backoff_base_ms = 200, .backoff_max_ms = 400, .max_attempts = 100,
				   .deadline_ms = 600, .breaker_threshold = 100 };
	struct http_client *c = client_new(&s);
	struct http_settings slow = { .attempt_timeout_ms = 200, .deadline_ms = 500, .max_attempts = 100,
				      .backoff_base_ms = 10, .breaker_threshold = 100 };
	struct http_client *cs = client_new(&slow);
	double t0, dt;
	long status;
	int i;

	for (i = 0; i < 3; i++) {
		t0 = now_s();
		CHECK_EQ_INT(call(c, "GET", plain.base, "/always/503", NULL, &status, NULL, 0), -EAGAIN);
		dt = now_s() - t0;
		CHECK(dt < 1.1); /* the 0.6 s deadline, with room for a loaded machine */
	}
	/* A server that never answers in time: each attempt times out, the deadline ends the call. */
	t0 = now_s();
	CHECK_EQ_INT(call(cs, "GET", plain.base, "/slow/3000", NULL, &status, NULL, 0), -EAGAIN);
	dt = now_s() - t0;
	CHECK(dt >= 0.45 && dt < 1.2);
	http_client_free(c);
	http_client_free(cs);
}

/*
 * Calls given one deadline_at_ms share it: the second of two 600 ms calls
 * under a 1 s deadline is cut off at the deadline, and a call whose deadline
 * has passed is not sent at all.  Neither learnt anything about the service:
 * even a breaker that opens at the first failure stays closed.
 */
static void test_calls_share_an_operation_deadline(void)
{
	struct http_settings s = { .deadline_ms = 1000, .attempt_timeout_ms = 5000,
				   .breaker_threshold = 1 };
	struct http_stats st;
	long status;
	struct http_client *c = client_new(&s);
	struct http_request req = { .method = "GET" };
	struct http_response resp;
	char url[128], err[256];
	int64_t before;
	double t0, dt;

	snprintf(url, sizeof(url), "%s/slow/600", plain.base);
	req.url = url;
	t0 = now_s();
	req.deadline_at_ms = http_deadline(c);
	CHECK_EQ_INT(http_request(c, &req, &resp, err, sizeof(err)), 0);
	http_response_free(&resp);
	CHECK_EQ_INT(http_request(c, &req, &resp, err, sizeof(err)), -EAGAIN);
	http_response_free(&resp);
	dt = now_s() - t0;
	CHECK(dt >= 0.95 && dt < 1.2);
	CHECK(strstr(err, "deadline") != NULL);
	before = peer_int("/stats", "requests");
	t0 = now_s();
	CHECK_EQ_INT(http_request(c, &req, &resp, err, sizeof(err)), -EAGAIN);
	http_response_free(&resp);
	CHECK(now_s() - t0 < 0.05);
	CHECK(strstr(err, "deadline has passed") != NULL);
	CHECK_EQ_INT(peer_int("/stats", "requests") - before, 1); /* peer_int's own */
	CHECK_EQ_INT(call(c, "GET", plain.base, "/ok", NULL, &status, NULL, 0), 0);
	CHECK_EQ_INT(status, 200);
	http_client_stats(c, &st);
	CHECK_EQ_INT(st.fast_fails, 0);
	CHECK_EQ_INT(st.breaker, HTTP_BREAKER_CLOSED);
	http_client_free(c);
}

static void test_breaker_opens_and_recovers(void)
{
	struct state_changes seen = { 0 };
	struct http_settings s = { .backoff_base_ms = 5, .max_attempts = 2, .breaker_threshold = 2,
				   .breaker_cooldown_ms = 1000, .on_state = on_state,
				   .state_arg = &seen };
	struct http_client *c = client_new(&s);
	struct http_stats st;
	int64_t before;
	double t0;
	long status;

	CHECK_EQ_INT(call(c, "GET", plain.base, "/always/503", NULL, &status, NULL, 0), -EAGAIN);
	http_client_stats(c, &st);
	CHECK_EQ_INT(st.breaker, HTTP_BREAKER_CLOSED);
	CHECK_EQ_INT(seen.downs, 0);
	CHECK_EQ_INT(call(c, "GET", plain.base, "/always/503", NULL, &status, NULL, 0), -EAGAIN);
	http_client_stats(c, &st);
	CHECK_EQ_INT(st.breaker, HTTP_BREAKER_OPEN);
	CHECK_EQ_INT(st.breaker_opens, 1);
	CHECK_EQ_INT(seen.downs, 1);

	/* Open: fail fast, the server sees nothing, even for a path that would work. */
	before = peer_int("/hits/always", "hits");
	t0 = now_s();
	CHECK_EQ_INT(call(c, "GET", plain.base, "/ok", NULL, &status, NULL, 0), -EAGAIN);
	CHECK_EQ_INT(call(c, "GET", plain.base, "/always/503", NULL, &status, NULL, 0), -EAGAIN);
	CHECK(now_s() - t0 < 0.2);
	CHECK_EQ_INT(peer_int("/hits/always", "hits"), before);
	http_client_stats(c, &st);
	CHECK_EQ_INT(st.fast_fails, 2);

	/* After the cool-down one probe goes through; it fails (one attempt): open again, no new event. */
	usleep(1050 * 1000);
	CHECK_EQ_INT(call(c, "GET", plain.base, "/always/503", NULL, &status, NULL, 0), -EAGAIN);
	CHECK_EQ_INT(peer_int("/hits/always", "hits"), before + 1);
	http_client_stats(c, &st);
	CHECK_EQ_INT(st.breaker, HTTP_BREAKER_OPEN);
	CHECK_EQ_INT(seen.downs, 1);
	CHECK_EQ_INT(call(c, "GET", plain.base, "/ok", NULL, &status, NULL, 0), -EAGAIN);

	/* The next probe succeeds: closed, one "reachable again". */
	usleep(1050 * 1000);
	CHECK_EQ_INT(call(c, "GET", plain.base, "/ok", NULL, &status, NULL, 0), 0);
	CHECK_EQ_INT(status, 200);
	http_client_stats(c, &st);
	CHECK_EQ_INT(st.breaker, HTTP_BREAKER_CLOSED);
	CHECK_EQ_INT(seen.ups, 1);
	CHECK_EQ_INT(seen.downs, 1);
	CHECK_EQ_INT(call(c, "GET", plain.base, "/ok", NULL, &status, NULL, 0), 0);
	CHECK_EQ_INT(seen.ups, 1);
	http_client_free(c);
}

struct worker {
	struct http_client *c;
	int fails;
};

static void *worker_run(void *arg)
{
	struct worker *w = arg;
	long status;
	int i;

	for (i = 0; i < 25; i++)
		if (call(w->c, "POST", plain.base, "/echo", "{\"x\":1}", &status, NULL, 0) != 0 ||
		    status != 200)
			w->fails++;
	return NULL;
}

static void test_keep_alive_reuse(void)
{
	struct http_settings s = { 0 };
	struct http_client *c = client_new(&s);
	struct worker w[4];
	pthread_t t[4];
	int64_t before, after;
	long status;
	int i;

	before = peer_int("/stats", "connections");
	for (i = 0; i < 30; i++)
		CHECK_EQ_INT(call(c, "GET", plain.base, "/ok", NULL, &status, NULL, 0), 0);
	/* peer_int itself opens one connection per look. */
	after = peer_int("/stats", "connections");
	CHECK_EQ_INT(after - before, 1 + 1);

	before = after;
	for (i = 0; i < 4; i++) {
		w[i].c = c;
		w[i].fails = 0;
		pthread_create(&t[i], NULL, worker_run, &w[i]);
	}
	for (i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		CHECK_EQ_INT(w[i].fails, 0);
	}
	after = peer_int("/stats", "connections");
	/* 100 requests from 4 threads: at most one new connection per concurrent request. */
	CHECK(after - before - 1 <= 4);
	printf("keep-alive: 100 threaded requests used %lld new connection(s)\n",
	       (long long)(after - before - 1));
	http_client_free(c);
}

static void test_response_limit(void)
{
	struct http_settings s = { .max_response = 4096 };
	struct http_client *c = client_new(&s);
	char body[8192];
	long status;

	CHECK_EQ_INT(call(c, "GET", plain.base, "/big/4096", NULL, &status, NULL, 0), 0);
	CHECK_EQ_INT(call(c, "GET", plain.base, "/big/4097", NULL, &status, body, sizeof(body)), -EMSGSIZE);
	CHECK(strstr(body, "larger than 4096") != NULL);
	http_client_free(c);
}

static void test_tls_verification(void)
{
	struct http_settings strict = { .breaker_threshold = 1, .max_attempts = 4 };
	struct http_settings with_ca = { .ca_file = cert_path };
	struct http_settings insecure = { .insecure = true };
	struct http_client *c;
	struct http_stats st;
	char msg[512];
	long status;

	c = client_new(&strict);
	CHECK_EQ_INT(call(c, "GET", tls.base, "/ok", NULL, &status, msg, sizeof(msg)), -EPROTO);
	CHECK(strstr(msg, "TLS verification failed") != NULL);
	printf("strict TLS: %s\n", msg);
	http_client_stats(c, &st);
	CHECK_EQ_INT(st.attempts, 1); /* never retried */
	CHECK_EQ_INT(st.breaker, HTTP_BREAKER_CLOSED); /* and not "service down" */
	http_client_free(c);

	c = client_new(&with_ca);
	CHECK_EQ_INT(call(c, "GET", tls.base, "/ok", NULL, &status, msg, sizeof(msg)), 0);
	CHECK_EQ_INT(status, 200);
	http_client_free(c);

	c = client_new(&insecure);
	CHECK_EQ_INT(call(c, "GET", tls.base, "/ok", NULL, &status, NULL, 0), 0);
	http_client_free(c);
}

static void make_cert(void)
{
	const char *dir = test_dir_make();
	char cmd[1024];

	snprintf(cert_path, sizeof(cert_path), "%s/cert.pem", dir);
	snprintf(key_path, sizeof(key_path), "%s/key.pem", dir);
	snprintf(cmd, sizeof(cmd),
		 "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 "
		 "-subj /CN=localhost -addext subjectAltName=IP:127.0.0.1,DNS:localhost "
		 "-keyout %s -out %s 2>/dev/null",
		 key_path, cert_path);
	if (system(cmd) != 0) {
		fprintf(stderr, "openssl req failed\n");
		exit(2);
	}
}

/* Cleartext HTTP only to this host: a KMS request carries a token, its answer a DEK. */
static void test_url_private(void)
{
	static const char *const ok[] = {
		"https://vault.example:8200", "HTTPS://kms.eu-west-1.amazonaws.com/",
		"http://127.0.0.1:8200", "http://127.1.2.3/", "http://localhost:8200",
		"http://LOCALHOST", "http://[::1]:8200/v1",
	};
	static const char *const refused[] = {
		"http://10.0.0.1:8200", "http://vault.example", "http://127.0.0.1.evil.example",
		"http://localhost.evil.example:80", "http://128.0.0.1", "http://[::2]:8200",
		"ftp://127.0.0.1", "127.0.0.1:8200", "http://[::1", "http://127.0.0.1@evil.example/",
	};
	size_t i;

	for (i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
		CHECK(http_url_private(ok[i]));
	for (i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
		if (http_url_private(refused[i])) {
			fprintf(stderr, "accepted %s\n", refused[i]);
			CHECK(0);
		}
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	RUN(test_url_private);
	make_cert();
	peer_start(&plain, false);
	peer_start(&tls, true);
	RUN(test_get_and_post);
	RUN(test_sigv4_headers);
	RUN(test_retries_retryable_statuses);
	RUN(test_retry_after_is_honoured);
	RUN(test_no_retry_on_client_errors);
	RUN(test_classifier_decides);
	RUN(test_throttling_is_not_an_outage);
	RUN(test_connection_refused_is_retried);
	RUN(test_deadline_bounds_everything);
	RUN(test_calls_share_an_operation_deadline);
	RUN(test_breaker_opens_and_recovers);
	RUN(test_keep_alive_reuse);
	RUN(test_response_limit);
	RUN(test_tls_verification);
	peer_stop(&plain);
	peer_stop(&tls);
	return check_summary();
}
