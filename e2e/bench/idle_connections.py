#!/usr/bin/env python3
"""Issue 14 figure: a broker's RSS with N idle connections, and after they close.
Usage: idle_connections.py BROKER_PID N PORT (connects from 127.0.0.2-5)."""
import socket, time, sys
pid=int(sys.argv[1]); n=int(sys.argv[2]); port=int(sys.argv[3])
def rss():
    for l in open(f'/proc/{pid}/status'):
        if l.startswith('VmRSS'): return int(l.split()[1])
def fds(): 
    import os; return len(os.listdir(f'/proc/{pid}/fd'))
print('before', rss(), 'kB, fds', fds())
socks=[]
for i in range(n):
    s=socket.socket(); s.bind((f'127.0.0.{2+i%4}',0)); s.connect(('127.0.0.1',port)); socks.append(s)
time.sleep(2)
print(f'{n} idle connections', rss(), 'kB, fds', fds())
for s in socks: s.close()
time.sleep(3)
print('after close', rss(), 'kB, fds', fds())
