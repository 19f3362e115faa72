"""Administration (an admin account's key): `accounts`, `keys`, `activations` and `audit`."""

from __future__ import annotations

import time

from cloudassist.client import flags, render
from cloudassist.client.context import Client
from cloudassist.v1 import admin_pb2


async def accounts_create(c: Client) -> int:
    response = await c.admin.CreateAccount(
        admin_pb2.CreateAccountRequest(name=c.args.name, admin=c.args.admin)
    )
    return c.done(response, response.account.account_id)


async def accounts_list(c: Client) -> int:
    a = c.args
    response = await c.admin.ListAccounts(
        admin_pb2.ListAccountsRequest(page_size=a.page_size, page_token=a.page_token)
    )
    return c.listing(
        response,
        response.accounts,
        [
            ("ACCOUNT_ID", lambda x: x.account_id),
            ("NAME", lambda x: x.name),
            ("ADMIN", lambda x: "yes" if x.admin else "no"),
            ("CREATED", lambda x: render.when(x.creation_time)),
        ],
    )


async def keys_create(c: Client) -> int:
    response = await c.admin.CreateApiKey(
        admin_pb2.CreateApiKeyRequest(account_id=c.args.account, description=c.args.description)
    )
    return c.done(response, response.token)


async def keys_list(c: Client) -> int:
    a = c.args
    response = await c.admin.ListApiKeys(
        admin_pb2.ListApiKeysRequest(
            account_id=a.account, page_size=a.page_size, page_token=a.page_token
        )
    )
    return c.listing(
        response,
        response.keys,
        [
            ("KEY_ID", lambda k: k.key_id),
            ("ACCOUNT_ID", lambda k: k.account_id),
            ("DESCRIPTION", lambda k: k.description or "-"),
            ("CREATED", lambda k: render.when(k.creation_time)),
            ("REVOKED", lambda k: render.when(k.revocation_time)),
        ],
    )


async def keys_revoke(c: Client) -> int:
    return c.done(await c.admin.RevokeApiKey(admin_pb2.RevokeApiKeyRequest(key_id=c.args.key_id)))


async def activations_create(c: Client) -> int:
    a = c.args
    request = admin_pb2.CreateActivationRequest(
        account_id=a.account,
        region_id=c.region,
        description=a.description,
        max_registrations=a.max_registrations,
    )
    if a.expires_in:
        request.expiration_time.FromSeconds(int(time.time()) + a.expires_in)
    response = await c.admin.CreateActivation(request)
    return c.done(response, response.activation.activation_id, response.activation_code)


async def activations_list(c: Client) -> int:
    a = c.args
    response = await c.admin.ListActivations(
        admin_pb2.ListActivationsRequest(page_size=a.page_size, page_token=a.page_token)
    )
    return c.listing(
        response,
        response.activations,
        [
            ("ACTIVATION_ID", lambda x: x.activation_id),
            ("ACCOUNT_ID", lambda x: x.account_id),
            ("REGION", lambda x: x.region_id),
            ("USED", lambda x: f"{x.registrations}/{x.max_registrations}"),
            ("EXPIRES", lambda x: render.when(x.expiration_time)),
        ],
    )


async def audit(c: Client) -> int:
    a = c.args
    response = await c.admin.ListAuditEvents(
        admin_pb2.ListAuditEventsRequest(
            account_id=a.account, method=a.method, page_size=a.page_size, page_token=a.page_token
        )
    )
    return c.listing(
        response,
        response.events,
        [
            ("TIME", lambda e: render.when(e.time)),
            ("ACCOUNT_ID", lambda e: e.account_id),
            ("KEY_ID", lambda e: e.key_id),
            ("METHOD", lambda e: e.method.rsplit("/", 1)[-1]),
            ("CODE", lambda e: e.code),
            ("IDS", lambda e: " ".join(e.resource_ids)),
        ],
    )


def add_accounts(sub: flags.Subparsers) -> None:
    accounts = sub.add_parser("accounts", help="(admin) create and list accounts")
    asub = accounts.add_subparsers(dest="action", required=True, metavar="ACTION")
    acreate = asub.add_parser("create", help="create an account")
    acreate.add_argument("name")
    acreate.add_argument("--admin", action="store_true", help="may call the admin API")
    acreate.set_defaults(handler=accounts_create)
    alist = asub.add_parser("list", help="list accounts")
    flags.paged(alist)
    alist.set_defaults(handler=accounts_list)


def add_keys(sub: flags.Subparsers) -> None:
    keys = sub.add_parser("keys", help="(admin) create, list and revoke API keys")
    ksub = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    kcreate = ksub.add_parser("create", help="create a key; prints its token once")
    kcreate.add_argument("--account", default="", help="[your own account]")
    kcreate.add_argument("--description", default="")
    kcreate.set_defaults(handler=keys_create)
    klist = ksub.add_parser("list", help="list keys")
    klist.add_argument("--account", default="", help="[all accounts]")
    flags.paged(klist)
    klist.set_defaults(handler=keys_list)
    krevoke = ksub.add_parser("revoke", help="revoke a key; it stops working at once")
    krevoke.add_argument("key_id")
    krevoke.set_defaults(handler=keys_revoke)


def add_activations(sub: flags.Subparsers) -> None:
    activations = sub.add_parser("activations", help="(admin) activations agents register with")
    tsub = activations.add_subparsers(dest="action", required=True, metavar="ACTION")
    tcreate = tsub.add_parser(
        "create", help="create an activation (in --region); prints its id and code"
    )
    tcreate.add_argument("--account", default="", help="[your own account]")
    tcreate.add_argument("--description", default="")
    tcreate.add_argument("--max-registrations", type=int, default=1, help="[1]")
    tcreate.add_argument("--expires-in", type=int, default=0, help="seconds [86400]")
    tcreate.set_defaults(handler=activations_create)
    tlist = tsub.add_parser("list", help="list activations")
    flags.paged(tlist)
    tlist.set_defaults(handler=activations_list)


def add_audit(sub: flags.Subparsers) -> None:
    au = sub.add_parser("audit", help="(admin) who called which mutating RPC, when")
    au.add_argument("--account", default="")
    au.add_argument("--method", default="", help="e.g. /cloudassist.v1.CommandService/RunCommand")
    flags.paged(au)
    au.set_defaults(handler=audit)
