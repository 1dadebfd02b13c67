"""A Kubernetes API fixture: the pods part of the core v1 API over TLS with a bearer token.

The JSON shapes follow the Kubernetes documentation's examples (API concepts: "Efficient detection
of changes", "Watch bookmarks", "410 Gone responses"; the Pod and PodList reference): a PodList
with metadata.resourceVersion, watch streams of newline-separated {"type", "object"} events
(ADDED, MODIFIED, DELETED, BOOKMARK, ERROR with a Status of code 410), and Status bodies for 401
and 410. fieldSelector=spec.nodeName=<node> is honoured, as the API server does.

Used in-process by the tests: Fixture(...).start(), then add/modify/delete pods, expire() old
resource versions, and read .requests to see what the client asked.
"""
import copy
import json
import os
import ssl
import subprocess
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def make_ca_and_cert(d):
    """A self-signed CA and a server certificate for 127.0.0.1 / localhost, by the openssl CLI."""
    def run(*a):
        subprocess.run(["openssl"] + list(a), check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    ca_key, ca_crt = os.path.join(d, "ca.key"), os.path.join(d, "ca.crt")
    key, csr, crt = (os.path.join(d, n) for n in ("server.key", "server.csr", "server.crt"))
    ext = os.path.join(d, "san.ext")
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca_crt,
        "-days", "2", "-subj", "/CN=kubernetes-fixture-ca")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
        "-subj", "/CN=kube-apiserver")
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\n")
    run("x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial",
        "-out", crt, "-days", "2", "-extfile", ext)
    # A client certificate, as kind and kubeadm put in a kubeconfig (users[].user.client-*-data).
    ckey, ccsr, ccrt = (os.path.join(d, n) for n in ("client.key", "client.csr", "client.crt"))
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", ckey, "-out", ccsr,
        "-subj", "/O=system:nodes/CN=system:node:node-1")
    run("x509", "-req", "-in", ccsr, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial",
        "-out", ccrt, "-days", "2")
    return ca_crt, crt, key


def pod(name, namespace, uid, node, ip, containers, labels=None, annotations=None, owner=None,
        start_time="2026-11-24T10:00:00Z"):
    """A Pod as `kubectl get pod -o json` shows it. containers: [(name, image, 64-hex id)]."""
    meta = {
        "name": name, "namespace": namespace, "uid": uid, "resourceVersion": "0",
        "creationTimestamp": start_time, "labels": labels or {},
        "annotations": annotations or {},
    }
    if owner:
        kind, oname = owner
        meta["generateName"] = oname + "-"
        meta["ownerReferences"] = [{
            "apiVersion": "apps/v1" if kind != "Job" else "batch/v1", "kind": kind,
            "name": oname, "uid": "0c9f7f5e-owner-0000-0000-%012d" % (len(oname)),
            "controller": True, "blockOwnerDeletion": True}]
    return {
        "kind": "Pod", "apiVersion": "v1", "metadata": meta,
        "spec": {
            "containers": [{"name": c, "image": img, "ports": [{"containerPort": 8080,
                                                               "protocol": "TCP"}],
                            "resources": {}, "terminationMessagePath": "/dev/termination-log",
                            "imagePullPolicy": "IfNotPresent"} for c, img, _ in containers],
            "restartPolicy": "Always", "dnsPolicy": "ClusterFirst", "nodeName": node,
            "serviceAccountName": "default", "schedulerName": "default-scheduler",
        },
        "status": {
            "phase": "Running", "hostIP": "10.0.0.5", "podIP": ip, "podIPs": [{"ip": ip}],
            "startTime": start_time, "qosClass": "BestEffort",
            "conditions": [{"type": "Ready", "status": "True", "lastProbeTime": None,
                            "lastTransitionTime": start_time}],
            "containerStatuses": [{
                "name": c, "state": {"running": {"startedAt": start_time}},
                "lastState": {}, "ready": True, "restartCount": 0, "image": img,
                "imageID": "docker.io/library/%s@sha256:%s" % (img.split(":")[0], cid),
                "containerID": "containerd://" + cid, "started": True,
            } for c, img, cid in containers],
        },
    }


def namespace(name, uid, labels=None, annotations=None):
    """A Namespace as `kubectl get namespace -o json` shows it."""
    lab = {"kubernetes.io/metadata.name": name}
    lab.update(labels or {})
    return {"kind": "Namespace", "apiVersion": "v1",
            "metadata": {"name": name, "uid": uid, "resourceVersion": "0",
                         "creationTimestamp": "2026-11-01T00:00:00Z", "labels": lab,
                         "annotations": annotations or {}},
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}


def status(code, reason, message):
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


class Fixture:
    def __init__(self, tmp, token="fixture-token-0123456789", watch_seconds=2.0):
        self.tmp = tmp
        self.token = token
        self.watch_seconds = watch_seconds
        self.cv = threading.Condition()
        self.rv = 1000
        self.pods = {}      # uid -> pod
        self.namespaces = {}  # name -> namespace
        self.events = []    # (rv, type, object, resource)
        self.oldest = 0     # a watch from a version below this gets 410
        self.gone_as_status = False  # 410 as the HTTP status rather than an ERROR event
        self.requests = []  # (path, query dict, authorized)
        self.ca, crt, key = make_ca_and_cert(tmp)
        fx = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def send_json(self, code, body):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                u = urllib.parse.urlsplit(self.path)
                q = dict(urllib.parse.parse_qsl(u.query))
                # A bearer token, or a client certificate the fixture CA signed (the handshake
                # verified it: CERT_OPTIONAL refuses bad ones and lets none through).
                ok = self.headers.get("Authorization") == "Bearer " + fx.token or \
                    bool(self.connection.getpeercert())
                with fx.cv:
                    fx.requests.append((u.path, q, ok))
                if not ok:
                    return self.send_json(401, status(401, "Unauthorized", "Unauthorized"))
                res = u.path[len("/api/v1/"):]
                if res not in ("pods", "namespaces"):
                    return self.send_json(404, status(404, "NotFound", "the server could not "
                                                      "find the requested resource"))
                node = None
                sel = q.get("fieldSelector", "")
                if sel.startswith("spec.nodeName="):
                    node = sel.split("=", 1)[1]
                if q.get("watch") in ("1", "true"):
                    return self.watch(q, node, res)
                with fx.cv:
                    if res == "namespaces":
                        items = [copy.deepcopy(n) for n in fx.namespaces.values()]
                    else:
                        items = [copy.deepcopy(p) for p in fx.pods.values()
                                 if node is None or p["spec"]["nodeName"] == node]
                    rv = str(fx.rv)
                kind = "NamespaceList" if res == "namespaces" else "PodList"
                self.send_json(200, {"kind": kind, "apiVersion": "v1",
                                     "metadata": {"resourceVersion": rv}, "items": items})

            def chunk(self, obj):
                # Each event in two HTTP chunks sent apart, so the client sees a line cut in the
                # middle (as a real API server's writes and TLS records may cut it).
                data = json.dumps(obj).encode() + b"\n"
                half = len(data) // 2
                for part in (data[:half], data[half:]):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                    self.wfile.flush()
                    time.sleep(0.005)

            def watch(self, q, node, res):
                since = int(q.get("resourceVersion") or 0)
                with fx.cv:
                    gone = since < fx.oldest and fx.gone_as_status
                if gone:
                    # The other form: the request itself answered 410 Gone.
                    return self.send_json(410, status(410, "Gone", "too old resource version: "
                                                      "%d (%d)" % (since, fx.oldest)))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                deadline = time.time() + fx.watch_seconds
                try:
                    with fx.cv:
                        if since < fx.oldest:
                            # What the API server sends for an expired version: 200, then one
                            # ERROR event carrying a 410 Status, then the end of the stream.
                            self.chunk({"type": "ERROR", "object": status(
                                410, "Expired", "too old resource version: %d (%d)" %
                                (since, fx.oldest))})
                            self.wfile.write(b"0\r\n\r\n")
                            return
                    sent = since
                    while time.time() < deadline:
                        with fx.cv:
                            if sent < fx.oldest:
                                # gone_as_status: the stream just ends, and the resumed watch
                                # request gets its 410 as the HTTP status.
                                if not fx.gone_as_status:
                                    self.chunk({"type": "ERROR", "object": status(
                                        410, "Expired", "too old resource version: %d (%d)" %
                                        (sent, fx.oldest))})
                                break
                            todo = [e for e in fx.events if e[0] > sent]
                            if not todo:
                                fx.cv.wait(0.1)
                                continue
                        for rv, typ, obj, eres in todo:
                            sent = rv
                            if typ == "BOOKMARK" and q.get("allowWatchBookmarks") != "true":
                                continue
                            if eres not in (None, res):
                                continue
                            if typ != "BOOKMARK" and node and res == "pods" and \
                                    obj["spec"]["nodeName"] != node:
                                continue
                            self.chunk({"type": typ, "object": obj})
                    self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass
                self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(crt, key)
        ctx.load_verify_locations(self.ca)
        ctx.verify_mode = ssl.CERT_OPTIONAL
        self.client_crt = os.path.join(tmp, "client.crt")
        self.client_key = os.path.join(tmp, "client.key")
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]

    def start(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self):
        self.httpd.shutdown()

    def service_account_dir(self, token=None):
        """A folder shaped like /var/run/secrets/kubernetes.io/serviceaccount."""
        d = os.path.join(self.tmp, "serviceaccount-%s" % (token or "good"))
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "token"), "w") as f:
            f.write((token or self.token) + "\n")
        with open(self.ca) as src, open(os.path.join(d, "ca.crt"), "w") as f:
            f.write(src.read())
        with open(os.path.join(d, "namespace"), "w") as f:
            f.write("observability")
        return d

    def _event(self, typ, obj, res="pods"):
        self.rv += 1
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.events.append((self.rv, typ, obj, res))
        self.cv.notify_all()
        return obj

    def add(self, p, silent=False):
        """ADDED (or MODIFIED when the uid is known)."""
        with self.cv:
            uid = p["metadata"]["uid"]
            typ = "MODIFIED" if uid in self.pods else "ADDED"
            obj = self._event(typ, p)
            self.pods[uid] = obj
            if silent:  # in the store but never announced: only a list sees it
                self.events.pop()

    def delete(self, uid):
        with self.cv:
            p = self.pods.pop(uid)
            self._event("DELETED", p)

    def bookmark(self):
        with self.cv:
            self._event("BOOKMARK", {"kind": "Pod", "apiVersion": "v1",
                                     "metadata": {"resourceVersion": "0"}}, None)

    def add_namespace(self, n):
        with self.cv:
            typ = "MODIFIED" if n["metadata"]["name"] in self.namespaces else "ADDED"
            self.namespaces[n["metadata"]["name"]] = self._event(typ, n, "namespaces")

    def expire(self):
        """Compacts history: every watch from a version before now ends with ERROR 410."""
        with self.cv:
            self.rv += 1
            self.oldest = self.rv
            self.cv.notify_all()

    def watches(self, res="pods"):
        with self.cv:
            return [q for p, q, ok in self.requests if q.get("watch") and p.endswith(res)]

    def lists(self, res="pods"):
        with self.cv:
            return [q for p, q, ok in self.requests
                    if not q.get("watch") and ok and p.endswith(res)]
