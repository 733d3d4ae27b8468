"""The C++ client (librocketmq, via the unmodified `rocketmq` 0.4.4 wheel) against a
ferrocket name server and broker: sync sends, a push consumer with a tag filter (before
the broker read this client's heartbeat leniently it received nothing), and a pull
consumer. Prints one line per check and a closing `N passed, N failed` line."""
import sys
import time

from rocketmq.client import Message, Producer, PullConsumer, PushConsumer

NS = sys.argv[1]
results = []


def check(name, ok, detail=""):
    results.append(ok)
    print(("ok   " if ok else "FAIL ") + name + ((": " + detail) if detail else ""), flush=True)


def text(b):
    return b.decode() if isinstance(b, bytes) else b


producer = Producer("cpp_pg")
producer.set_namesrv_addr(NS)
producer.start()
sent = []
for i in range(6):
    m = Message("CppTopic")
    m.set_tags("TagA" if i % 2 == 0 else "TagB")
    m.set_keys("k%d" % i)
    m.set_body("body-%d" % i)
    r = producer.send_sync(m)
    sent.append((int(r.status), text(r.msg_id)))
producer.shutdown()
check("sync sends answered SEND_OK", all(s == 0 for s, _ in sent), repr(sent))

got = []


def on_message(msg):
    got.append((text(msg.tags), text(msg.body)))


push = PushConsumer("cpp_push_cg")
push.set_namesrv_addr(NS)
push.subscribe("CppTopic", on_message, "TagA")
push.start()
deadline = time.time() + 30
while time.time() < deadline and len(got) < 3:
    time.sleep(0.2)
time.sleep(1)  # anything more (e.g. a TagB) would show up now
push.shutdown()
want = [("TagA", "body-0"), ("TagA", "body-2"), ("TagA", "body-4")]
check("push consumer with tag TagA receives exactly the TagA messages", sorted(got) == want, repr(sorted(got)))

pull = PullConsumer("cpp_pull_cg")
pull.set_namesrv_addr(NS)
pull.start()
pulled = []
deadline = time.time() + 30
while time.time() < deadline and len(pulled) < 6:
    for msg in pull.pull("CppTopic"):
        pulled.append(text(msg.body))
    if len(pulled) < 6:
        time.sleep(0.2)
pull.shutdown()
check("pull consumer reads every message", sorted(pulled) == sorted("body-%d" % i for i in range(6)), repr(sorted(pulled)))

passed = sum(1 for r in results if r)
failed = len(results) - passed
print("e2e/cpp: %d passed, %d failed" % (passed, failed))
sys.exit(0 if failed == 0 else 1)
