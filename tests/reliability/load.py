"""Mixed client load for fault injection, and what the clients observed.

Client threads loop over what pipelines and clusters do (reads, preflights, admission reviews, and the approval
continuation: preflight → approve → consume) against a list of servers. A request that gets no definite answer
(connection refused or lost, timeout, 503) is retried with the same idempotency key on the next server until
`RETRY_SECONDS` pass, as a pipeline would. Every error is counted by kind; what each client received is recorded
for the invariant checker (`tests.reliability.invariants`).
"""

from __future__ import annotations

import random
import re
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx

API = "/api/v1/enforcement"
APPROVALS = f"{API}/approvals"
ADMISSION = f"{API}/gate/k8s/admission/review"
# How long a client keeps retrying one request before giving up on it (longer than any injected outage).
RETRY_SECONDS = 20.0
RETRY_PAUSE_SECONDS = 0.1
# The scope most gate traffic draws on, with a hard limit low enough that the load exhausts it mid-run, and the
# scope the approval continuation uses, large enough never to refuse it.
LIMITED_SCOPE = "payments"
APPROVAL_SCOPE = "checkout"
# Answers that say the request was not (or not yet) served, so the client retries it.
RETRYABLE_STATUS = frozenset({502, 503, 504})


@dataclass
class Consume:
    """One approval continuation's consume: the key it was sent with and whether a 200 reached the caller."""

    approval_id: str
    decision_id: str
    key: str
    body: dict[str, Any]
    delivered: bool = False
    answers: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Failure:
    """Something that must not happen whatever the fault: `kind` groups them (see `KINDS`)."""

    kind: str
    detail: str


# Failure kinds. Anything a client sees that the server must never answer, or an invariant the checker finds
# broken; `gate_unanswered` and `consume_not_retrievable` are the two promises issue 18 adds (a fail-safe gate
# answer when the database is down; a committed consume returned again for its idempotency key).
KINDS = ("server_error", "unexpected_answer", "broken_promise", "client_error", "no_recovery", "invariant",
         "gate_unanswered", "consume_not_retrievable")


@dataclass
class Observations:
    """Everything the clients saw; appended to from many threads under one lock."""

    started: float = field(default_factory=time.monotonic)
    # HTTP answers received (attempts that met a transport error are only counted in `errors`).
    requests: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    # Answers that are failures whatever the fault: 500s, unexpected statuses, broken promises seen by a client.
    failures: list[Failure] = field(default_factory=list)
    # (source, idempotency key) → every decision_id received for it.
    decisions: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    consumes: dict[str, Consume] = field(default_factory=dict)
    # (seconds since start, server, served, error kind or "fail_safe"): served is a definite, non-fail-safe answer.
    timeline: list[tuple[float, str, bool, str | None]] = field(default_factory=list)
    answers: Counter[str] = field(default_factory=Counter)
    # Seconds each gate request took to be answered by a server (transport errors excluded).
    gate_seconds: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def now(self) -> float:
        return time.monotonic() - self.started

    def answered(self, server: str, served: bool, kind: str | None = None, *, responded: bool = True) -> None:
        """Record one attempt: `responded` when an HTTP answer came back, `served` when it was a definite one."""
        with self.lock:
            self.requests += responded
            self.timeline.append((self.now(), server, served, kind or (None if served else "fail_safe")))
            if kind is not None:
                self.errors[kind] += 1

    def gate_answered(self, seconds: float) -> None:
        with self.lock:
            self.gate_seconds.append(seconds)

    def received(self, source: str, key: str, decision_id: str | None) -> None:
        if decision_id is None:
            return
        with self.lock:
            self.decisions.setdefault((source, key), set()).add(decision_id)

    def fail(self, kind: str, detail: str) -> None:
        assert kind in KINDS, kind
        with self.lock:
            self.failures.append(Failure(kind, detail))

    def count(self, answer: str) -> None:
        with self.lock:
            self.answers[answer] += 1


@dataclass(frozen=True)
class Keys:
    """The tenant's API keys: a pipeline (member) and a reviewer (owner), distinct as prod separation requires."""

    pipeline: str
    reviewer: str


def _deployment(name: str, cpu_millis: int) -> dict[str, Any]:
    """A one-replica Deployment in the limited scope's namespace, priced at a few dollars a month."""
    container = {"name": "app", "image": "nginx:1.27",
                 "resources": {"requests": {"cpu": f"{cpu_millis}m", "memory": "64Mi"}}}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": LIMITED_SCOPE},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [container]}}}}


def _review(uid: str, obj: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": uid, "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
                        "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
                        "namespace": LIMITED_SCOPE, "name": obj["metadata"]["name"], "operation": "CREATE",
                        "userInfo": {"username": "reliability", "groups": ["system:authenticated"]},
                        "object": obj, "oldObject": None, "dryRun": False}}


def _problem_code(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return "-"
    return str(body.get("code", "-")) if isinstance(body, dict) else "-"


def _fail_safe(reason_codes: list[Any]) -> str | None:
    gate = [str(code) for code in reason_codes if str(code).startswith("gate_")]
    return gate[0] if gate else None


def _is_fail_safe(response: httpx.Response) -> bool:
    """Whether a gate answer is a fail-safe one (the server answered, but could not decide)."""
    if response.status_code != 200 or "/gate/" not in response.url.path:
        return False
    body = response.json()
    res = body.get("response") or {}
    return (_fail_safe(body.get("reason_codes") or []) is not None
            or "fail-safe" in (res.get("auditAnnotations") or {})
            or any("fail-safe" in warning for warning in res.get("warnings") or []))


class Client:
    """One load thread: its own connections to every server, under both keys."""

    def __init__(self, index: int, servers: list[str], keys: Keys, obs: Observations, seed: int) -> None:
        self.index = index
        self.servers = servers
        self.obs = obs
        self.rng = random.Random(seed * 1000 + index)
        self.serial = 0
        self.http = {who: [httpx.Client(base_url=url, timeout=httpx.Timeout(10.0, connect=2.0),
                                        headers={"Authorization": f"Bearer {key}"}) for url in servers]
                     for who, key in (("pipeline", keys.pipeline), ("reviewer", keys.reviewer))}
        self.known: list[str] = []

    def close(self) -> None:
        for clients in self.http.values():
            for client in clients:
                client.close()

    def send(self, method: str, path: str, *, who: str = "pipeline", body: Any = None,
             headers: dict[str, str] | None = None, params: dict[str, Any] | None = None) -> httpx.Response | None:
        """Send until a definite answer (anything but a transport error or 502/503/504) or `RETRY_SECONDS`."""
        deadline = time.monotonic() + RETRY_SECONDS
        first = self.rng.randrange(len(self.servers))
        attempt = 0
        while True:
            position = (first + attempt) % len(self.servers)
            server = self.servers[position]
            kind: str
            responded = False
            sent = time.monotonic()
            try:
                response = self.http[who][position].request(method, path, json=body, headers=headers, params=params)
            except httpx.ConnectError:
                kind = "connection_refused"
            except httpx.TimeoutException:
                kind = "timeout"
            except httpx.TransportError:
                # The server died (or dropped the connection) with the request in flight: it may have been served.
                kind = "connection_lost"
            else:
                responded = True
                if "/gate/" in path:
                    self.obs.gate_answered(time.monotonic() - sent)
                if response.status_code in RETRYABLE_STATUS:
                    kind = f"{response.status_code}:{_problem_code(response)}"
                    if "/gate/" in path:
                        # The gate promises an answer (fail-safe if need be) whatever the database does.
                        self.obs.fail("gate_unanswered", f"{method} {path} → {response.status_code} "
                                                         f"{response.text[:200]}")
                else:
                    if response.status_code >= 500:
                        self.obs.answered(server, False, f"{response.status_code}:{_problem_code(response)}")
                        self.obs.fail("server_error", f"{method} {path} → {response.status_code} {response.text[:300]}")
                    else:
                        self.obs.answered(server, not _is_fail_safe(response))
                    return response
            self.obs.answered(server, False, kind, responded=responded)
            if time.monotonic() > deadline:
                self.obs.count(f"gave_up:{kind}")
                return None
            attempt += 1
            if attempt % len(self.servers) == 0:
                # Every server was tried once: wait before the next round rather than spin.
                time.sleep(RETRY_PAUSE_SECONDS)

    def step(self) -> None:
        roll = self.rng.random()
        if roll < 0.35:
            self.read()
        elif roll < 0.55:
            self.preflight()
        elif roll < 0.75:
            self.admission()
        else:
            self.approval_continuation()

    def _run_id(self) -> str:
        self.serial += 1
        return f"c{self.index}-{self.serial}-{uuid.uuid4().hex[:8]}"

    def read(self) -> None:
        choice = self.rng.random()
        if choice < 0.4 or not self.known:
            r = self.send("GET", f"{API}/budgets")
            if r is not None and r.status_code == 200:
                for budget in r.json()["items"]:
                    if Decimal(budget["reserved_usd"]) > Decimal(budget["monthly_limit_usd"]):
                        self.obs.fail("broken_promise", f"budget {budget['scope_key']} read with reserved "
                                      f"{budget['reserved_usd']} over its hard limit {budget['monthly_limit_usd']}")
            self._expect(r, 200, "read budgets")
        elif choice < 0.8:
            decision_id = self.rng.choice(self.known)
            r = self.send("GET", f"{API}/decisions/{decision_id}")
            # A decision whose id reached a client was committed: it must be readable from every replica.
            self._expect(r, 200, f"read decision {decision_id}")
        else:
            r = self.send("GET", f"{API}/ledger", who="reviewer", params={"limit": 20})
            self._expect(r, 200, "read ledger")

    def _expect(self, r: httpx.Response | None, status: int, what: str) -> None:
        if r is None:
            return
        self.obs.count(f"{what.split()[0]} {what.split()[1]}:{r.status_code}")
        if r.status_code != status:
            self.obs.fail("unexpected_answer", f"{what}: {r.status_code} {r.text[:300]}")

    def _gate(self, body: dict[str, Any]) -> dict[str, Any] | None:
        r = self.send("POST", f"{API}/gate/terraform/preflight", body=body)
        if r is None:
            return None
        if r.status_code != 200:
            self.obs.fail("unexpected_answer", f"preflight {body['run_id']}: {r.status_code} {r.text[:300]}")
            return None
        out: dict[str, Any] = r.json()
        self._record_gate("terraform", out["idempotency_key"], out.get("decision_id"), out["decision"],
                          out["reason_codes"])
        return out

    def _record_gate(self, source: str, key: str, decision_id: str | None, decision: str,
                     reason_codes: list[Any]) -> None:
        self.obs.received(source, key, decision_id)
        if decision_id is not None:
            self.known.append(decision_id)
        fail_safe = _fail_safe(reason_codes)
        self.obs.count(f"{source}:{decision}" + (f":fail_safe:{fail_safe}" if fail_safe else ""))

    def preflight(self) -> None:
        amount = self.rng.randint(1, 20)
        self._gate({"run_id": self._run_id(), "stage": "pre_apply", "project_id": LIMITED_SCOPE,
                    "environment": "nonprod", "resource_reference": "module.app.aws_instance.web",
                    "estimated_monthly_delta_usd": str(amount)})

    def admission(self) -> None:
        uid = str(uuid.uuid4())
        review = _review(uid, _deployment(f"web-{uid[:8]}", self.rng.choice((50, 100, 200))))
        r = self.send("POST", ADMISSION, body=review)
        if r is None:
            return
        if r.status_code != 200:
            self.obs.fail("unexpected_answer", f"admission {uid}: {r.status_code} {r.text[:300]}")
            return
        res = r.json()["response"]
        audit = res.get("auditAnnotations") or {}
        if res.get("uid") != uid:
            self.obs.fail("broken_promise", f"admission {uid} answered for uid {res.get('uid')}")
        decision = audit.get("decision", "ALLOW" if res["allowed"] else "DENY")
        # A fail-safe answer names its trigger: in `fail-safe` when unrecorded, in a warning when recorded.
        said = " ".join([*(res.get("warnings") or []), str((res.get("status") or {}).get("message", ""))])
        found = re.search(r"\b(gate_[a-z_]+)", said)
        trigger = audit.get("fail-safe") or (found.group(1) if found else None)
        self._record_gate("k8s_admission", uid, audit.get("decision-id"), decision, [trigger] if trigger else [])

    def approval_continuation(self) -> None:
        run = self._run_id()
        gate = self._gate({"run_id": run, "stage": "pre_apply", "project_id": APPROVAL_SCOPE, "environment": "prod",
                           "resource_reference": f"module.db.aws_db_instance.{run}",
                           "estimated_monthly_delta_usd": str(self.rng.randint(100, 200)),
                           "estimated_hourly_delta_usd": "0.01"})
        if gate is None or gate["decision"] != "REQUIRE_APPROVAL" or not gate.get("approval_request_id"):
            return
        approval_id = gate["approval_request_id"]
        token = self._token(approval_id)
        if token is None:
            return
        key = f"consume-{uuid.uuid4()}"
        consume = Consume(approval_id, gate["decision_id"], key,
                          {"approval_token": token, **gate["continuation"]["binding"]})
        with self.obs.lock:
            self.obs.consumes[approval_id] = consume
        r = self.send("POST", f"{APPROVALS}/consume", body=consume.body, headers={"Idempotency-Key": key})
        if r is None:
            return
        consume.answers.append(f"{r.status_code}:{_problem_code(r)}")
        if r.status_code == 200:
            consume.delivered = True
            if r.json().get("decision_id") != gate["decision_id"]:
                self.obs.fail("broken_promise",
                              f"consume of {approval_id} answered for decision {r.json().get('decision_id')}")
        self.obs.count(f"consume:{r.status_code}:{_problem_code(r) if r.status_code != 200 else 'consumed'}")

    def _token(self, approval_id: str) -> str | None:
        """Approve as the reviewer; if that answer was lost, the pipeline picks the token up as its requester."""
        r = self.send("POST", f"{APPROVALS}/{approval_id}/approve", who="reviewer", body={"notes": None})
        if r is not None and r.status_code == 200:
            token: str = r.json()["approval_token"]
            return token
        if r is not None and _problem_code(r) != "approval_already_reviewed":
            self.obs.fail("unexpected_answer", f"approve {approval_id}: {r.status_code} {r.text[:300]}")
            return None
        picked = self.send("POST", f"{APPROVALS}/{approval_id}/token")
        self.obs.count(f"pickup:{picked.status_code}:{_problem_code(picked)}" if picked is not None
                       else "pickup:gave_up")
        if picked is not None and picked.status_code == 200:
            token = picked.json()["approval_token"]
            return token
        return None


class Load:
    """`threads` clients looping `Client.step` until `stop()`."""

    def __init__(self, servers: list[str], keys: Keys, *, threads: int, seed: int = 1) -> None:
        self.obs = Observations()
        self.clients = [Client(i, servers, keys, self.obs, seed) for i in range(threads)]
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, args=(c,), daemon=True) for c in self.clients]

    def _loop(self, client: Client) -> None:
        while not self._stop.is_set():
            try:
                client.step()
            except Exception as exc:  # a client bug must be reported, not end the thread silently
                client.obs.fail("client_error", f"client error: {type(exc).__name__}: {exc}")

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> Observations:
        self._stop.set()
        for thread in self._threads:
            thread.join(RETRY_SECONDS + 15)
        for client in self.clients:
            client.close()
        return self.obs
