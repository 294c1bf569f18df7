"""Runs localstripe (pinned in requirements.txt) for orderflow's tests and bench.

    serve.py --port N [--store FILE]

Three differences from `localstripe --port N`, none in how it answers Stripe's API
beyond the first:
  * it listens on 127.0.0.1 only (localstripe binds every interface);
  * its objects stay in memory, or in FILE with --store (localstripe writes the whole
    store to /tmp/localstripe.pickle after every request, shared by every instance on
    the machine); with --store a restart keeps them, as Stripe would;
  * POST /v1/payment_intents/{id}/confirm takes off_session, as Stripe's API does
    (localstripe 1.15.10 refuses it as unexpected) and ignores it, as localstripe has no
    notion of the customer being present. stripe-mock checks the parameter against
    Stripe's OpenAPI document instead;
  * GET /v1/payment_intents takes created[gt|gte|lt|lte], as Stripe's API does
    (localstripe refuses it as unexpected), which reconciliation-service's listing sends.
"""
import argparse
import logging
import os
import pickle

from aiohttp import web

from localstripe import resources  # before server, which binds its routes at import

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--store")
args = parser.parse_args()

store = resources.store


def dump_to_disk():
    if args.store:
        tmp = args.store + ".tmp"
        with open(tmp, "wb") as f:
            pickle.dump(store, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, args.store)


store.dump_to_disk = dump_to_disk
if args.store and os.path.exists(args.store):
    with open(args.store, "rb") as f:
        store.update(pickle.load(f))

confirm = resources.PaymentIntent._api_confirm.__func__


def confirm_off_session(cls, id, off_session=None, **kwargs):
    return confirm(cls, id, **kwargs)


resources.PaymentIntent._api_confirm = classmethod(confirm_off_session)
# server's route table takes the functions of this list: point it at the new one.
for i, (method, url, func) in enumerate(resources.extra_apis):
    if url == "/v1/payment_intents/{id}/confirm":
        resources.extra_apis[i] = (method, url, resources.PaymentIntent._api_confirm)

list_all = resources.PaymentIntent._api_list_all.__func__


def list_created(cls, url, limit=None, starting_after=None, created=None, **kwargs):
    li = list_all(cls, url, limit=limit, starting_after=starting_after, **kwargs)
    if created is not None:
        if not isinstance(created, dict):
            created = {"eq": created}
        tests = {"gt": lambda c, v: c > v, "gte": lambda c, v: c >= v, "lt": lambda c, v: c < v,
                 "lte": lambda c, v: c <= v, "eq": lambda c, v: c == v}
        for op, value in created.items():
            if op not in tests:
                raise resources.UserError(400, "Unexpected created[" + op + "]")
            li._list = [o for o in li._list if tests[op](o.created, int(value))]
    return li


resources.PaymentIntent._api_list_all = classmethod(list_created)

from localstripe import server  # noqa: E402

logger = logging.getLogger("aiohttp.access")
logger.setLevel(logging.INFO)
logger.addHandler(logging.StreamHandler())
web.run_app(server.app, host="127.0.0.1", port=args.port, access_log=logger, print=None)
