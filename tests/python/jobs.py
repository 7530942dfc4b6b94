"""The work both queues run: plain functions an unmodified app would have."""
import os

from celery import Celery

celery_app = Celery(
    "jobs",
    broker=os.environ.get("APP_REDIS_URL", "redis://127.0.0.1:6379/0"),
    backend=os.environ.get("APP_REDIS_URL", "redis://127.0.0.1:6379/0"),
)
celery_app.conf.broker_connection_retry_on_startup = True


def add(a, b):
    return a + b


@celery_app.task
def celery_add(a, b):
    return a + b
