"""Registers N silent devices (one sensor each) through POST /api/v1/devices on 127.0.0.1:PORT,
over 8 keep-alive connections. Usage: python3 register.py N PORT"""
import http.client, json, sys, threading
n = int(sys.argv[1]); port = int(sys.argv[2]); threads = 8; failed = []
def worker(k):
    c = http.client.HTTPConnection("127.0.0.1", port)
    for i in range(k, n, threads):
        body = json.dumps({"id": f"silent-{i:06d}", "sensors": [f"silent-{i:06d}-air"]})
        c.request("POST", "/api/v1/devices", body, {"Content-Type": "application/json"})
        r = c.getresponse(); r.read()
        if r.status != 201: failed.append(r.status)
ts = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
[t.start() for t in ts]; [t.join() for t in ts]
if failed: sys.exit(f"{len(failed)} registrations failed: {failed[:5]}")
