#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""An AWS KMS peer for the tests: moto_server with signature checking on, behind a TCP proxy.

Run as a program (the C unit test does): prints one JSON line
  {"endpoint": "http://127.0.0.1:PORT/", "access_key": ..., "secret": ..., "key_arn": ..., "key_id": ...}
then reads commands, one per line, and answers each with one JSON line:
  rotate ARN          RotateKeyOnDemand (one more entry in ListKeyRotations)
  create-key          a new key: {"key_arn": ...}
  disable ARN         DisableKey
  session             temporary credentials of an assumed role:
                      {"access_key": ..., "secret": ..., "token": ...} (moto checks the token)
  deny ACTION         add an IAM Deny for ACTION (e.g. kms:Decrypt) to the test user
  allow               remove the Deny again
  down                the proxy refuses connections (KMS unreachable)
  hang                the proxy accepts but never answers
  up                  back to normal
  connections         {"connections": N}: TCP connections the proxy accepted
  throttle SHARE [N]  the throttling proxy (throttle_endpoint) answers the next N requests and then a SHARE
                      (0..1) of them with AWS's ThrottlingException
  latency MS          the throttling proxy delays every request by MS milliseconds
  throttled           {"throttled": N, "forwarded": N}: the throttling proxy's counters
EOF stops everything.  The tests in tests/integration import AwsPeer directly.

Two endpoints lead to the same moto: "endpoint" through the TCP proxy above, and "throttle_endpoint" through
tests/kmsd/throttle_proxy.py, an HTTP proxy that throttles and delays requests.

Signature checking: INITIAL_NO_AUTH_ACTION_COUNT=3 lets exactly the first three
requests (create the IAM user, its policy, its access key) through unsigned;
every request after that must carry a valid SigV4 signature of that user.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import boto3
import botocore.auth
import botocore.awsrequest
import botocore.credentials

from throttle_proxy import ThrottleProxy

REGION = "us-east-1"
USER = "envelopefs-test"
ALLOW_ALL = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proxy:
    """A TCP forwarder whose listening port can refuse, hang, or pass connections."""

    def __init__(self, target_port):
        self.target = target_port
        self.mode = "up"
        self.lock = threading.Lock()
        self.conns = []
        self.connections = 0
        self.port = free_port()
        self.listener = None
        self.listen()

    def listen(self):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        self.listener = s
        threading.Thread(target=self.accept_loop, args=(s,), daemon=True).start()

    def accept_loop(self, s):
        while True:
            try:
                c, _ = s.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                self.conns.append(c)
                mode = self.mode
            if mode == "hang":
                continue  # held open, never answered
            try:
                u = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                c.close()
                continue
            with self.lock:
                # Gone down while we connected: drop_all() has run without these two.
                if self.mode != "up":
                    c.close()
                    u.close()
                    continue
                self.conns.append(u)
            threading.Thread(target=self.pipe, args=(c, u), daemon=True).start()
            threading.Thread(target=self.pipe, args=(u, c), daemon=True).start()

    @staticmethod
    def pipe(a, b):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def drop_all(self):
        with self.lock:
            conns, self.conns = self.conns, []
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
                c.close()
            except OSError:
                pass

    def set_mode(self, mode):
        with self.lock:
            old, self.mode = self.mode, mode
        self.drop_all()
        if mode == "down" and old != "down":
            # shutdown() wakes the thread blocked in accept(); close() alone would not.
            try:
                self.listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.listener.close()
        elif mode != "down" and old == "down":
            self.listen()


class AwsPeer:
    def __init__(self):
        moto = shutil.which("moto_server")
        if not moto:
            raise RuntimeError("moto_server is not on PATH (the machine image's pyenv Python has it)")
        self.moto_port = free_port()
        env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="3")
        self.proc = subprocess.Popen([moto, "-H", "127.0.0.1", "-p", str(self.moto_port)], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.moto_port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto_server did not start")
                time.sleep(0.05)
        self.moto_url = "http://127.0.0.1:%d" % self.moto_port
        iam = boto3.client("iam", endpoint_url=self.moto_url, region_name=REGION,
                           aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
        iam.create_user(UserName=USER)
        iam.put_user_policy(UserName=USER, PolicyName="allow-all", PolicyDocument=json.dumps(ALLOW_ALL))
        key = iam.create_access_key(UserName=USER)["AccessKey"]
        self.access_key, self.secret = key["AccessKeyId"], key["SecretAccessKey"]
        self.iam = self.client("iam")
        self.kms = self.client("kms")
        self.key_arn = self.create_key()
        self.proxy = Proxy(self.moto_port)
        self.endpoint = "http://127.0.0.1:%d/" % self.proxy.port
        self.throttle = ThrottleProxy(self.moto_port)
        self.throttle_endpoint = "http://127.0.0.1:%d/" % self.throttle.port

    def client(self, service):
        return boto3.client(service, endpoint_url=self.moto_url, region_name=REGION,
                            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret)

    def create_key(self):
        return self.kms.create_key(Description="envelopefs test")["KeyMetadata"]["Arn"]

    def kms_raw(self, operation, params):
        """A signed KMS call without a model: Debian's botocore predates RotateKeyOnDemand."""
        body = json.dumps(params).encode()
        req = botocore.awsrequest.AWSRequest(method="POST", url=self.moto_url + "/", data=body, headers={
            "Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "TrentService." + operation})
        creds = botocore.credentials.Credentials(self.access_key, self.secret)
        botocore.auth.SigV4Auth(creds, "kms", REGION).add_auth(req)
        r = urllib.request.Request(req.url, data=body, headers=dict(req.headers.items()), method="POST")
        with urllib.request.urlopen(r, timeout=10) as resp:
            return json.loads(resp.read() or b"{}")

    def rotate(self, arn):
        self.kms_raw("RotateKeyOnDemand", {"KeyId": arn})
        return len(self.kms_raw("ListKeyRotations", {"KeyId": arn})["Rotations"])

    def session(self):
        """Temporary credentials with a session token, from AssumeRole on an allow-all role."""
        if not getattr(self, "role_arn", None):
            trust = {"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}]}
            self.role_arn = self.iam.create_role(
                RoleName="envelopefs-test-role",
                AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
            self.iam.put_role_policy(RoleName="envelopefs-test-role", PolicyName="allow-all",
                                     PolicyDocument=json.dumps(ALLOW_ALL))
        c = self.client("sts").assume_role(RoleArn=self.role_arn,
                                           RoleSessionName="envelopefs")["Credentials"]
        return {"access_key": c["AccessKeyId"], "secret": c["SecretAccessKey"], "token": c["SessionToken"]}

    def disable(self, arn):
        self.kms.disable_key(KeyId=arn.split("/")[-1])  # moto's DisableKey wants the bare ID

    def deny(self, action):
        deny = {"Version": "2012-10-17", "Statement": [ALLOW_ALL["Statement"][0],
                {"Effect": "Deny", "Action": action, "Resource": "*"}]}
        self.iam.put_user_policy(UserName=USER, PolicyName="allow-all", PolicyDocument=json.dumps(deny))

    def allow(self):
        self.iam.put_user_policy(UserName=USER, PolicyName="allow-all", PolicyDocument=json.dumps(ALLOW_ALL))

    def info(self):
        return {"endpoint": self.endpoint, "throttle_endpoint": self.throttle_endpoint,
                "access_key": self.access_key, "secret": self.secret,
                "key_arn": self.key_arn, "key_id": self.key_arn.split("/")[-1], "region": REGION}

    def stop(self):
        self.proxy.set_mode("down")
        self.throttle.stop()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def main():
    peer = AwsPeer()
    out = sys.stdout
    out.write(json.dumps(peer.info()) + "\n")
    out.flush()
    try:
        for line in sys.stdin:
            words = line.split()
            if not words:
                continue
            cmd, args = words[0], words[1:]
            try:
                if cmd == "rotate":
                    answer = {"rotations": peer.rotate(args[0])}
                elif cmd == "create-key":
                    answer = {"key_arn": peer.create_key()}
                elif cmd == "session":
                    answer = peer.session()
                elif cmd == "disable":
                    peer.disable(args[0])
                    answer = {}
                elif cmd == "deny":
                    peer.deny(args[0])
                    answer = {}
                elif cmd == "allow":
                    peer.allow()
                    answer = {}
                elif cmd in ("down", "hang", "up"):
                    peer.proxy.set_mode(cmd)
                    answer = {}
                elif cmd == "connections":
                    answer = {"connections": peer.proxy.connections}
                elif cmd == "throttle":
                    peer.throttle.set(share=args[0], burst=args[1] if len(args) > 1 else 0)
                    answer = {}
                elif cmd == "latency":
                    peer.throttle.set(latency_ms=args[0])
                    answer = {}
                elif cmd == "throttled":
                    answer = peer.throttle.counters()
                else:
                    answer = {"error": "unknown command " + cmd}
            except Exception as e:  # reported to the test, which fails on it
                answer = {"error": "%s: %s" % (type(e).__name__, e)}
            out.write(json.dumps(answer) + "\n")
            out.flush()
    finally:
        peer.stop()


if __name__ == "__main__":
    main()
