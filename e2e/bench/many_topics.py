#!/usr/bin/env python3
"""N new topics x 1 message each, SEND_MESSAGE (code 10) pipelined in batches of 200."""
import socket, json, struct, sys, time
port=int(sys.argv[1]); n=int(sys.argv[2]); prefix=sys.argv[3] if len(sys.argv)>3 else 'Tiny'
def frame(i):
    ext={"producerGroup":"pg","topic":f"{prefix}{i}","defaultTopic":"TBW102","defaultTopicQueueNums":"4",
         "queueId":"0","sysFlag":"0","bornTimestamp":str(int(time.time()*1000)),"flag":"0",
         "properties":f"UNIQ_KEY\x01u{prefix}{i}\x02","reconsumeTimes":"0","unitMode":"false","batch":"false"}
    h=json.dumps({"code":10,"language":"JAVA","version":479,"opaque":i,"flag":0,"extFields":ext}).encode()
    body=b'm'
    return struct.pack('>II', 4+len(h)+len(body), len(h)) + h + body
s=socket.create_connection(('127.0.0.1',port))
ok=0; codes={}
def read_answers(k):
    global ok
    data=b''; got=0
    while got<k:
        d=s.recv(1<<16)
        if not d: raise SystemExit('closed')
        data+=d
        while len(data)>=8:
            l,hl=struct.unpack('>II',data[:8])
            if len(data)<4+l: break
            h=json.loads(data[8:8+hl]); codes[h['code']]=codes.get(h['code'],0)+1
            data=data[4+l:]; got+=1
t=time.time()
for b in range(0,n,200):
    k=min(200,n-b)
    s.sendall(b''.join(frame(i) for i in range(b,b+k)))
    read_answers(k)
print(n,'topics in',round(time.time()-t,1),'s; answer codes',codes)
