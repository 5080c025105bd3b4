"""kfp.Client (kfp 2.17.0) per user through the aggregation-layer simulator, multi-user mode.

Run by conformance/tests/aggregated.rs. Each user is a kfp.Client with their own token; the
simulator authenticates it and passes the user on (front-proxy headers, or KFP's user header in
mesh mode). alice edits team-a, bob views team-b, admin is system:masters. Every check raises on
failure; the script exits non-zero on the first one and prints the number of checks at the end.

Environment: KFP_HOST (https://127.0.0.1:PORT of the simulator), KFP_CA (its CA file),
KFP_CORPUS (shared/corpus), KFP_SUITE_HOME (a scratch HOME).
"""

import os
import pathlib

import kfp
from kfp_server_api.rest import ApiException

HOST = os.environ["KFP_HOST"]
CA = os.environ["KFP_CA"]
CORPUS = pathlib.Path(os.environ["KFP_CORPUS"])
CHECKS = 0


def check(cond, what):
    global CHECKS
    CHECKS += 1
    if not cond:
        raise AssertionError(what)


def refused(status, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except ApiException as e:
        check(e.status == status, f"{fn.__name__}: status {e.status} != {status}: {e.body}")
        return e
    raise AssertionError(f"{fn.__name__}{args} {kwargs} should be refused with {status}")


def as_user(token):
    return kfp.Client(host=HOST, existing_token=token, ssl_ca_cert=CA)


def names(resp):
    return sorted(p.display_name for p in (resp.pipelines or []))


def main():
    os.environ["HOME"] = os.environ["KFP_SUITE_HOME"]
    alice, bob, admin = as_user("alice-token"), as_user("bob-token"), as_user("admin-token")
    hello = str(CORPUS / "hello_world.yaml")

    # alice edits team-a ...
    p = alice.upload_pipeline(hello, pipeline_name="alice-hello", namespace="team-a")
    check(p.pipeline_id, "alice uploaded in team-a")
    v = alice.upload_pipeline_version(hello, pipeline_version_name="v2", pipeline_id=p.pipeline_id)
    check(v.pipeline_version_id, "alice added a version")
    check("alice-hello" in names(alice.list_pipelines(namespace="team-a")), "alice lists team-a")
    # ... and nothing in team-b.
    refused(403, alice.list_pipelines, namespace="team-b")
    # KFP answers an upload it does not authorize with 400 (its upload endpoints differ from
    # the gateway's 403); the message names what was refused.
    e = refused(400, alice.upload_pipeline, hello, pipeline_name="alice-in-b", namespace="team-b")
    check('cannot create resource \\"pipelines\\"' in e.body, e.body)

    # The admin creates in team-b; bob reads it there and nothing else.
    q = admin.upload_pipeline(hello, pipeline_name="admin-in-b", namespace="team-b")
    check("admin-in-b" in names(bob.list_pipelines(namespace="team-b")), "bob lists team-b")
    check(bob.get_pipeline(q.pipeline_id).display_name == "admin-in-b", "bob gets in team-b")
    check(len(bob.list_pipeline_versions(q.pipeline_id).pipeline_versions or []) == 1,
          "bob lists versions in team-b")
    refused(400, bob.upload_pipeline, hello, pipeline_name="bob-in-b", namespace="team-b")
    refused(403, bob.delete_pipeline, q.pipeline_id)
    refused(403, bob.list_pipelines, namespace="team-a")
    refused(403, bob.get_pipeline, p.pipeline_id)
    refused(403, bob.delete_pipeline_version, p.pipeline_id, v.pipeline_version_id)

    # The admin sees both; alice's objects are untouched by bob's attempts.
    check("alice-hello" in names(admin.list_pipelines(namespace="team-a")), "admin lists team-a")
    check(len(alice.list_pipeline_versions(p.pipeline_id).pipeline_versions) == 2,
          "alice's versions are all there")
    alice.delete_pipeline_version(p.pipeline_id, v.pipeline_version_id)
    check(len(alice.list_pipeline_versions(p.pipeline_id).pipeline_versions) == 1,
          "alice deleted her version")

    print(f"kfp users: {CHECKS} checks passed")


if __name__ == "__main__":
    main()
