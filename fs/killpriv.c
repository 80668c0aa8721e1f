/* SPDX-License-Identifier: MIT */
/*
 * FUSE_HANDLE_KILLPRIV_V2 beneath libfuse.  See killpriv.h.
 *
 * Only three messages are looked at, by the kernel's own wire layout
 * (<linux/fuse.h>): the INIT request (does the kernel offer the flag?), its
 * reply (add the flag), and WRITE/SETATTR requests (the kill flags).
 * Everything else passes through untouched.
 */
#include "killpriv.h"

#include <linux/fuse.h>
#include <stdatomic.h>
#include <stddef.h>
#include <sys/uio.h>
#include <unistd.h>

/* The INIT request the kernel offered the flag in, until its reply is sent.
 * INIT is the only message in flight then: the kernel sends nothing else
 * before it is answered. */
static atomic_uint_fast64_t init_unique;
static atomic_bool init_offered;
static atomic_bool negotiated;
/* Set once, before the session's loop starts: for killpriv_cleared(). */
static struct fuse_session *session;

/* The node the request now read by this thread asks to clear setuid/setgid
 * on; 0 for none.  Reset by every read, so it never outlives its request. */
static _Thread_local uint64_t kill_nodeid;

/* A message's fixed-size argument, if the message holds all of it. */
static const void *argument(const void *msg, size_t len, size_t arg_len)
{
	return len >= sizeof(struct fuse_in_header) + arg_len
		       ? (const char *)msg + sizeof(struct fuse_in_header)
		       : NULL;
}

static void note_request(const void *msg, size_t len)
{
	const struct fuse_in_header *h = msg;
	const struct fuse_init_in *init;
	const struct fuse_write_in *write;
	const struct fuse_setattr_in *setattr;

	switch (h->opcode) {
	case FUSE_INIT:
		/* flags sits in the oldest INIT layout too. */
		init = argument(msg, len, offsetof(struct fuse_init_in, flags) + sizeof(init->flags));
		if (init && init->major == FUSE_KERNEL_VERSION &&
		    (init->flags & FUSE_HANDLE_KILLPRIV_V2)) {
			atomic_store(&init_unique, h->unique);
			atomic_store(&init_offered, true);
		}
		break;
	case FUSE_WRITE:
		/* write_flags sits in the oldest WRITE layout too. */
		write = argument(msg, len,
				 offsetof(struct fuse_write_in, write_flags) + sizeof(write->write_flags));
		if (write && (write->write_flags & FUSE_WRITE_KILL_SUIDGID))
			kill_nodeid = h->nodeid;
		break;
	case FUSE_SETATTR:
		setattr = argument(msg, len, sizeof(*setattr));
		if (setattr && (setattr->valid & FATTR_KILL_SUIDGID))
			kill_nodeid = h->nodeid;
		break;
	default:
		break;
	}
}

static ssize_t killpriv_read(int fd, void *buf, size_t len, void *userdata)
{
	ssize_t n = read(fd, buf, len);

	(void)userdata;
	kill_nodeid = 0;
	if (n >= (ssize_t)sizeof(struct fuse_in_header))
		note_request(buf, (size_t)n);
	return n;
}

/* libfuse sends a reply as the out header, then the argument. */
static void offer_flag(struct iovec *iov, int count)
{
	struct fuse_out_header *h;
	struct fuse_init_out *out;

	if (count < 2 || iov[0].iov_len < sizeof(*h))
		return;
	h = iov[0].iov_base;
	if (h->error != 0 || h->unique != atomic_load(&init_unique))
		return;
	atomic_store(&init_offered, false);
	if (iov[1].iov_len < offsetof(struct fuse_init_out, flags) + sizeof(out->flags))
		return;
	out = iov[1].iov_base;
	out->flags |= FUSE_HANDLE_KILLPRIV_V2;
	atomic_store(&negotiated, true);
}

static ssize_t killpriv_writev(int fd, struct iovec *iov, int count, void *userdata)
{
	(void)userdata;
	if (atomic_load(&init_offered))
		offer_flag(iov, count);
	return writev(fd, iov, count);
}

int killpriv_install(struct fuse_session *se)
{
	static const struct fuse_custom_io io = {
		.read = killpriv_read,
		.writev = killpriv_writev,
	};

	session = se;
	return fuse_session_custom_io(se, &io, fuse_session_fd(se));
}

bool killpriv_negotiated(void)
{
	return atomic_load(&negotiated);
}

bool killpriv_take(uint64_t nodeid)
{
	bool asked = kill_nodeid != 0 && kill_nodeid == nodeid;

	kill_nodeid = 0;
	return asked;
}

int killpriv_cleared(uint64_t nodeid)
{
	/* A negative offset drops the attributes only, not the cached pages. */
	return fuse_lowlevel_notify_inval_inode(session, nodeid, -1, 0);
}
