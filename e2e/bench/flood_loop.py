#!/usr/bin/env python3
"""Issue 14 figure: 2,000 idle connections plus 4 connections each pipelining 6,000 unread
GET_BROKER_RUNTIME_INFO requests (reconnecting every ~3.5 s) for SECS seconds.
Usage: flood_loop.py PORT SECS; run `ferrocket bench produce` meanwhile."""
import socket, json, struct, time, sys, threading
port=int(sys.argv[1]); secs=float(sys.argv[2])
def frame(code, opaque):
    h=json.dumps({"code":code,"language":"JAVA","version":479,"opaque":opaque,"flag":0,"extFields":{}}).encode()
    return struct.pack('>II', 4+len(h), len(h)) + h
buf=b''.join(frame(28, i) for i in range(6000))
end=time.time()+secs
def pipeliner():
    while time.time()<end:
        s=socket.socket(); s.connect(('127.0.0.1',port)); s.setblocking(False); off=0
        t=time.time()
        while off<len(buf) and time.time()-t<3 and time.time()<end:
            try: off+=s.send(buf[off:off+65536])
            except BlockingIOError: time.sleep(0.01)
        time.sleep(0.5); s.close()
idle=[]
for i in range(2000):
    s=socket.socket(); s.bind((f'127.0.0.{2+i%4}',0)); s.connect(('127.0.0.1',port)); idle.append(s)
ts=[threading.Thread(target=pipeliner) for _ in range(4)]
for t in ts: t.start()
for t in ts: t.join()
