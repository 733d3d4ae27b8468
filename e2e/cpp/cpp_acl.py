"""The C++ client (librocketmq, via the unmodified `rocketmq` 0.4.4 wheel) against a
ferrocket broker with RocketMQ's plain ACL on (`aclEnable=true`): its
`set_session_credentials` signatures are accepted for the right secret and refused for
a wrong one, a topic the account may only subscribe to refuses its sends, and a push
consumer with the right credentials receives exactly what was accepted (nothing
refused was stored); with a wrong secret it receives nothing. Prints one line per check
and a closing `N passed, N failed` line.

Usage: cpp_acl.py NAMESRV (topics AclTopic and ReadOnly created; accounts as in run.sh)."""
import sys
import time

from rocketmq.client import Message, Producer, PushConsumer

NS = sys.argv[1]
results = []


def check(name, ok, detail=""):
    results.append(ok)
    print(("ok   " if ok else "FAIL ") + name + ((": " + detail) if detail else ""), flush=True)


def send(secret, topic, body, n):
    p = Producer("cpp_acl_pg_%d" % n)
    p.set_namesrv_addr(NS)
    p.set_session_credentials("app-account", secret, "ALIYUN")
    p.start()
    try:
        m = Message(topic)
        m.set_body(body)
        return int(p.send_sync(m).status), ""
    except Exception as e:  # the wrapper raises on the client's error status
        return None, str(e)
    finally:
        p.shutdown()


status, err = send("app-secret-1", "AclTopic", "accepted-0", 0)
check("a send signed with the right secret is answered SEND_OK", status == 0, err)
status, err = send("wrong-secret", "AclTopic", "refused-secret", 1)
check("a send signed with a wrong secret fails", status is None, err)
status, err = send("app-secret-1", "ReadOnly", "refused-topic", 2)
check("a send to a topic with SUB only fails", status is None, err)


def consume(secret, group):
    got = []
    c = PushConsumer(group)
    c.set_namesrv_addr(NS)
    c.set_session_credentials("app-account", secret, "ALIYUN")
    c.subscribe("AclTopic", lambda msg: got.append(msg.body.decode()))
    c.start()
    deadline = time.time() + 20
    while time.time() < deadline and not got:
        time.sleep(0.2)
    time.sleep(1)  # anything more would show up now
    c.shutdown()
    return sorted(got)


got = consume("app-secret-1", "cpp_acl_cg")
check("a push consumer with the right secret receives exactly the accepted message", got == ["accepted-0"],
      repr(got))
got = consume("wrong-secret", "cpp_acl_cg2")
check("a push consumer with a wrong secret receives nothing", got == [], repr(got))

passed = sum(1 for r in results if r)
failed = len(results) - passed
print("e2e/cpp acl: %d passed, %d failed" % (passed, failed))
sys.exit(0 if failed == 0 else 1)
