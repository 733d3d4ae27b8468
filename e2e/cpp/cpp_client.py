"""The C++ client (librocketmq, via the unmodified `rocketmq` 0.4.4 wheel) against a
ferrocket name server and broker: sync, async, oneway, orderly and batch sends, user
properties, a delay level, push consumers (concurrent with a tag filter — before the
broker read this client's heartbeat leniently it received nothing — and orderly), and a
pull consumer. Prints one line per check and a closing `N passed, N failed` line.

Not covered: the RECONSUME_LATER path (this wrapper re-raises a callback's exception
after returning RECONSUME_LATER, so ctypes reports CONSUME_SUCCESS) and transactions (the
wrapper has no TransactionMQProducer)."""
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

# The rest of the producer's flow: async, oneway, orderly (one key, one queue), batch
# sends, a user property, a delay level; read back by a concurrent push consumer and,
# for the orderly ones, by an orderly push consumer.
flow = Producer("cpp_flow_pg")
flow.set_namesrv_addr(NS)
flow.start()
done = []


def msg(body, tag="F", **props):
    m = Message("CppFlow")
    m.set_tags(tag)
    m.set_body(body)
    for k, v in props.items():
        m.set_property(k, v)
    return m


for i in range(3):
    flow.send_async(msg("async-%d" % i), lambda r: done.append(int(r.status)), lambda e: done.append(str(e)))
deadline = time.time() + 30
while time.time() < deadline and len(done) < 3:
    time.sleep(0.1)
check("async sends call back SEND_OK", done == [0, 0, 0], repr(done))
for i in range(2):
    flow.send_oneway(msg("oneway-%d" % i))
orderly = [int(flow.send_orderly(msg("a%d" % i, tag="O"), 7).status) for i in range(5)]
check("orderly sends answered SEND_OK", orderly == [0] * 5, repr(orderly))
b = flow.send_batch([msg("batch-%d" % i) for i in range(3)])
check("batch send answered SEND_OK", int(b.status) == 0, repr(b.status))
flow.send_sync(msg("with-prop", color="blue"))
delayed = msg("delayed")
delayed.set_delay_time_level(2)
flow.send_sync(delayed)
flow.shutdown()

seen = {}


def on_flow(m):
    seen[text(m.body)] = (text(m.get_property("color") or ""), m.store_timestamp, m.born_timestamp)


fc = PushConsumer("cpp_flow_cg")
fc.set_namesrv_addr(NS)
fc.subscribe("CppFlow", on_flow, "*")
fc.start()
want = {"async-0", "async-1", "async-2", "oneway-0", "oneway-1", "batch-0", "batch-1", "batch-2",
        "with-prop", "delayed"} | {"a%d" % i for i in range(5)}
deadline = time.time() + 60
while time.time() < deadline and not want <= set(seen):
    time.sleep(0.2)
fc.shutdown()
check("every async, oneway, orderly, batch, property and delayed message arrives", want <= set(seen),
      repr(sorted(want - set(seen))))
check("a user property arrives", seen.get("with-prop", ("",))[0] == "blue", repr(seen.get("with-prop")))
d = seen.get("delayed")
check("delay level 2 (5 s) holds the message", d is not None and d[1] - d[2] >= 4500, repr(d))

in_order = []
oc = PushConsumer("cpp_orderly_cg", orderly=True)
oc.set_namesrv_addr(NS)
oc.subscribe("CppFlow", lambda m: in_order.append(text(m.body)), "O")
oc.start()
deadline = time.time() + 60
while time.time() < deadline and len(in_order) < 5:
    time.sleep(0.2)
oc.shutdown()
check("an orderly push consumer reads one key's messages in order", in_order == ["a%d" % i for i in range(5)],
      repr(in_order))

passed = sum(1 for r in results if r)
failed = len(results) - passed
print("e2e/cpp: %d passed, %d failed" % (passed, failed))
sys.exit(0 if failed == 0 else 1)
