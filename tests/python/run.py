"""Runs python-rq, Celery, dramatiq or a Django Channels chat layer against ONE
Redis URL (slotbridge's port) and prints a JSON report as its last line;
exits 1 when the scenario fails.

usage: run.py PORT rq|celery|channels|channels-pubsub|dramatiq|expect-crossslot
"""
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PORT, MODE = sys.argv[1], sys.argv[2]
URL = f"redis://127.0.0.1:{PORT}/0"
os.environ["APP_REDIS_URL"] = URL
sys.path.insert(0, HERE)
BIN = os.path.dirname(sys.executable)


def report(ok, **fields):
    print(json.dumps({"ok": ok, "mode": MODE, **fields}))
    sys.exit(0 if ok else 1)


def run_rq():
    import redis
    import rq

    r = redis.Redis.from_url(URL)
    q = rq.Queue("default", connection=r)
    jobs = [q.enqueue("jobs.add", i, i) for i in range(50)]
    failing = q.enqueue("jobs.add", 1, "x")
    worker = subprocess.run(
        [os.path.join(BIN, "rq"), "worker", "--burst", "--url", URL, "default"],
        cwd=HERE, capture_output=True, text=True, timeout=120,
    )
    done = sum(
        1
        for i, j in enumerate(jobs)
        if j.latest_result() is not None and j.latest_result().return_value == 2 * i
    )
    status = failing.get_status().value
    failed = len(q.failed_job_registry)
    ok = worker.returncode == 0 and done == 50 and status == "failed" and failed == 1
    report(ok, completed=done, failing_status=status, failed_registry=failed,
           worker_stderr=worker.stderr[-2000:] if not ok else "")


def run_celery():
    from jobs import celery_add, celery_app

    log = open(os.path.join(os.environ.get("APP_LOGS", HERE), "celery-worker.log"), "w")
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "jobs", "worker", "--pool=solo",
         "--loglevel=warning"],
        cwd=HERE, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        results = [celery_add.delay(i, i) for i in range(30)]
        done = sum(1 for i, r in enumerate(results) if r.get(timeout=60) == 2 * i)
        pong = []
        for _ in range(20):
            pong = celery_app.control.inspect(timeout=2).ping() or {}
            if pong:
                break
            time.sleep(0.5)
        ok = done == 30 and len(pong) == 1
        report(ok, completed=done, ping=list(pong.values()))
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()


def run_channels(layer_class):
    """A chat room on Django Channels' Redis channel layer: group messages
    reach every member, direct messages their channel, and a member that
    left gets nothing more."""
    import asyncio

    import django
    from django.conf import settings

    settings.configure()
    django.setup()

    async def chat():
        layer = layer_class(hosts=[("127.0.0.1", int(PORT))])
        try:
            a, b, c = [await layer.new_channel() for _ in range(3)]
            await layer.group_add("room", a)
            await layer.group_add("room", b)
            await layer.group_send("room", {"type": "chat.message", "text": "hi room"})
            got = [await asyncio.wait_for(layer.receive(x), 10) for x in (a, b)]
            await layer.send(c, {"type": "chat.direct", "text": "hi c"})
            got.append(await asyncio.wait_for(layer.receive(c), 10))
            await layer.group_discard("room", b)
            await layer.group_send("room", {"type": "chat.message", "text": "only a"})
            got.append(await asyncio.wait_for(layer.receive(a), 10))
            return [m["text"] for m in got]
        finally:
            await layer.flush()

    texts = asyncio.run(chat())
    report(texts == ["hi room", "hi room", "hi c", "only a"], texts=texts)


def channels_core():
    from channels_redis.core import RedisChannelLayer

    run_channels(RedisChannelLayer)


def channels_pubsub():
    from channels_redis.pubsub import RedisPubSubChannelLayer

    run_channels(RedisPubSubChannelLayer)


def run_dramatiq():
    """dramatiq's Redis broker: 20 tasks with results, a delayed one, one
    dead-lettered, and a dead worker's unacknowledged messages on two
    queues given back by another worker's maintenance (its dispatch script
    finds them with KEYS on a pattern it builds)."""
    import dramatiq
    import redis
    from dramatiq import Message
    from dramatiq.brokers.redis import RedisBroker
    from dramatiq.results import Results
    from dramatiq.results.backends import RedisBackend

    broker = RedisBroker(url=URL)
    broker.add_middleware(Results(backend=RedisBackend(url=URL)))
    dramatiq.set_broker(broker)

    @dramatiq.actor(store_results=True)
    def add(a, b):
        return a + b

    @dramatiq.actor(max_retries=0)
    def fail():
        raise RuntimeError("dead letter")

    worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=100)
    worker.start()
    try:
        sent = [add.send(i, i) for i in range(20)]
        done = sum(1 for i, m in enumerate(sent)
                   if m.get_result(block=True, timeout=30000) == 2 * i)
        start = time.time()
        late = add.send_with_options(args=(1, 2), delay=1000)
        delayed = late.get_result(block=True, timeout=30000) == 3 and time.time() - start >= 0.9
        fail.send()
        broker.join("default", timeout=30000)
    finally:
        worker.stop()
    r = redis.Redis.from_url(URL)
    dead_lettered = r.zcard("dramatiq:default.XQ")
    # Worker A takes two messages from each of two queues and dies.
    a = RedisBroker(url=URL, heartbeat_timeout=500)
    for q in ("lost1", "lost2"):
        a.declare_queue(q)
        for i in range(2):
            a.enqueue(Message(queue_name=q, actor_name="x", args=(i,), kwargs={}, options={}))
        a.do_fetch(q, 10)
    time.sleep(1)
    b = RedisBroker(url=URL, heartbeat_timeout=500, maintenance_chance=1_000_000)
    recovered = [len(b.do_fetch(q, 10)) for q in ("lost1", "lost2")]
    ok = done == 20 and delayed and dead_lettered == 1 and recovered == [2, 2]
    report(ok, completed=done, delayed=delayed, dead_lettered=dead_lettered,
           recovered=recovered)


def expect_crossslot():
    import redis
    import rq

    q = rq.Queue("default", connection=redis.Redis.from_url(URL))
    try:
        q.enqueue("jobs.add", 1, 2)
    except redis.exceptions.ResponseError as e:
        # redis-py 6+ turns the CROSSSLOT prefix into the exception's class.
        error = f"{type(e).__name__}: {e}"
        report("CrossSlot" in error or "CROSSSLOT" in error, error=error)
    report(False, error="enqueue succeeded without the rule")


try:
    {
        "rq": run_rq,
        "celery": run_celery,
        "channels": channels_core,
        "channels-pubsub": channels_pubsub,
        "dramatiq": run_dramatiq,
        "expect-crossslot": expect_crossslot,
    }[MODE]()
except SystemExit:
    raise
except Exception as e:  # noqa: BLE001 - the report says what went wrong
    report(False, error=f"{type(e).__name__}: {e}")
