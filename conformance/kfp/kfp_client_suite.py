"""The real kfp.Client (kfp 2.17.0) against a running kfp-apiserver.

Run by conformance/tests/kfp_client.rs with the venv that scripts/kfp-sdk-venv makes. It uses
only kfp's public client (and kfp_server_api where kfp.Client has no method: create from URL,
get by name, update). Every check raises on failure; the script exits non-zero on the first one.

Environment: KFP_HOST (https://127.0.0.1:PORT), KFP_TOKEN, KFP_CA (the server's CA file),
KFP_CORPUS (shared/corpus), KFP_PACKAGE_BASE (an http://127.0.0.1:PORT/ serving the corpus, for
package_url), KFP_MULTI_USER ("1" when the server runs with --kfp-multi-user).
"""

import json
import os
import pathlib
import sys
import threading
import time

import kfp
import kfp_server_api
from kfp_server_api.rest import ApiException

HOST = os.environ["KFP_HOST"]
TOKEN = os.environ["KFP_TOKEN"]
CA = os.environ["KFP_CA"]
CORPUS = pathlib.Path(os.environ["KFP_CORPUS"])
PACKAGE_BASE = os.environ.get("KFP_PACKAGE_BASE", "")
MULTI = os.environ.get("KFP_MULTI_USER") == "1"

CHECKS = 0


def check(cond, what):
    global CHECKS
    CHECKS += 1
    if not cond:
        raise AssertionError(what)


def expect_error(status, fn, *args, needle=None, **kwargs):
    try:
        fn(*args, **kwargs)
    except ApiException as e:
        check(e.status == status, f"{fn.__name__}{args}: status {e.status} != {status}: {e.body}")
        if needle is not None:
            check(needle in (e.body or ""), f"{fn.__name__}{args}: {needle!r} not in {e.body}")
        return e
    raise AssertionError(f"{fn.__name__}{args} should fail with {status}")


def client():
    # kfp.Client reads ~/.config/kfp/context.json; keep it out of the way.
    os.environ["HOME"] = os.environ.get("KFP_SUITE_HOME", os.environ["HOME"])
    c = kfp.Client(host=HOST, existing_token=TOKEN, ssl_ca_cert=CA)
    return c


def all_pipelines(c, **kw):
    out, token = [], ""
    while True:
        r = c.list_pipelines(page_token=token, page_size=7, **kw)
        out.extend(r.pipelines or [])
        token = r.next_page_token
        if not token:
            return out


def single_user(c):
    valid = sorted(p for p in CORPUS.glob("*.yaml"))
    check(len(valid) >= 15, f"corpus has {len(valid)} pipelines")
    ids = {}
    for f in valid:
        p = c.upload_pipeline(str(f))
        check(p.pipeline_id and p.name, f"{f.name}: {p}")
        check(p.created_at is not None, f"{f.name}: created_at parsed as a time")
        ids[p.name] = p.pipeline_id
    # Packages: zip and tar.gz by content, JSON by name.
    for pkg, name in [("hello_world.zip", "from-zip"), ("hello_world.tar.gz", "from-tarball"),
                      ("hello_world.json", "from-json")]:
        p = c.upload_pipeline(str(CORPUS / "packages" / pkg), pipeline_name=name,
                              description=f"package {pkg}")
        check(p.name == name and p.description == f"package {pkg}", f"{pkg}: {p}")
        ids[name] = p.pipeline_id
    expect_error(400, c.upload_pipeline, str(CORPUS / "packages" / "first_file_not_yaml.zip"),
                 pipeline_name="not-yaml", needle="Unexpected pipeline file format")
    expect_error(409, c.upload_pipeline, str(CORPUS / "hello_world.yaml"), needle="already exist")

    # Every invalid file is refused with its validation message.
    for f in sorted((CORPUS / "invalid").glob("*.yaml")):
        e = expect_error(400, c.upload_pipeline, str(f), pipeline_name="invalid-candidate")
        body = json.loads(e.body)
        msg = body["error_message"]
        check("pipeline spec is invalid" in msg or "larger than" in msg, f"{f.name}: {msg}")
    check(c.get_pipeline_id("invalid-candidate") is None, "nothing of a refused upload stays")

    # Versions, by id and by pipeline name (which lists with a display_name filter).
    hw = ids["hello-world"]
    v2 = c.upload_pipeline_version(str(CORPUS / "hello_world.yaml"), pipeline_version_name="v2",
                                   pipeline_id=hw, description="second")
    check(v2.pipeline_id == hw and v2.name == "v2" and v2.description == "second", f"{v2}")
    v3 = c.upload_pipeline_version(str(CORPUS / "hello_world.yaml"), pipeline_version_name="v3",
                                   pipeline_name="hello-world")
    check(v3.pipeline_id == hw, f"{v3}")
    check(c.get_pipeline_id("hello-world") == hw, "get_pipeline_id")
    got = c.get_pipeline(hw)
    check(got.pipeline_id == hw and got.display_name == "hello-world", f"{got}")
    gv = c.get_pipeline_version(hw, v2.pipeline_version_id)
    check(gv.pipeline_spec["pipelineInfo"]["name"] == "hello-world", "the spec comes back")
    vs = c.list_pipeline_versions(hw)
    check(vs.total_size == 3 and len(vs.pipeline_versions) == 3, f"{vs.total_size}")
    vs = c.list_pipeline_versions(hw, sort_by="name desc", page_size=2)
    names = [v.name for v in vs.pipeline_versions]
    check(names == ["v3", "v2"], f"{names}")
    vs = c.list_pipeline_versions(hw, filter=json.dumps({"predicates": [
        {"operation": "EQUALS", "key": "name", "string_value": "v2"}]}))
    check([v.pipeline_version_id for v in vs.pipeline_versions] == [v2.pipeline_version_id], "filter")

    # Lists: sort and paging, checked against the uploads; total_size is the whole count.
    everything = all_pipelines(c, sort_by="name")
    names = [p.name for p in everything]
    check(names == sorted(names), f"sorted by name: {names}")
    check(set(ids) <= set(names) and len(names) == len(set(names)), "each once")
    r = c.list_pipelines(page_size=3, sort_by="created_at desc")
    check(r.total_size == len(everything) and len(r.pipelines) == 3 and r.next_page_token, f"{r.total_size}")
    sub = json.dumps({"predicates": [{"operation": "IS_SUBSTRING", "key": "name", "stringValue": "from-"}]})
    r = c.list_pipelines(filter=sub, sort_by="name")
    check([p.name for p in r.pipelines] == ["from-json", "from-tarball", "from-zip"], f"{r}")

    # Objects added between pages are neither skipped nor repeated.
    seen, token, n = [], "", 0
    while True:
        r = c.list_pipelines(page_token=token, page_size=4, sort_by="name")
        seen.extend(p.name for p in r.pipelines or [])
        n += 1
        c.upload_pipeline(str(CORPUS / "hello_world.yaml"), pipeline_name=f"aaa-{n}")
        c.upload_pipeline(str(CORPUS / "hello_world.yaml"), pipeline_name=f"zzz-{n}")
        token = r.next_page_token
        if not token:
            break
    originals = [x for x in seen if x in names]
    check(originals == names, "every object present throughout was listed once, in order")
    check(len(seen) == len(set(seen)), "nothing repeated")

    # The generated API: create, create from URL, get by name, update, delete with cascade.
    api = kfp_server_api.PipelineServiceApi(c._pipelines_api.api_client)
    made = api.pipeline_service_create_pipeline(
        kfp_server_api.V2beta1Pipeline(name="created-by-json", display_name="Created",
                                       description="d", tags={"team": "ml"}))
    check(made.display_name == "Created" and made.tags == {"team": "ml"}, f"{made}")
    byname = api.pipeline_service_get_pipeline_by_name("created-by-json")
    check(byname.pipeline_id == made.pipeline_id, "get by name")
    upd = api.pipeline_service_update_pipeline(made.pipeline_id, kfp_server_api.V2beta1Pipeline(
        display_name="Renamed", tags={"team": "data"}))
    check(upd.display_name == "Renamed" and upd.tags == {"team": "data"}, f"{upd}")
    if PACKAGE_BASE:
        url = PACKAGE_BASE + "hello_world.yaml"
        pv = api.pipeline_service_create_pipeline_version(made.pipeline_id, kfp_server_api.V2beta1PipelineVersion(
            pipeline_id=made.pipeline_id, name="from-url", display_name="From URL",
            package_url=kfp_server_api.V2beta1Url(pipeline_url=url)))
        check(pv.package_url.pipeline_url == url, f"{pv}")
        both = api.pipeline_service_create_pipeline_and_version(
            kfp_server_api.V2beta1CreatePipelineAndVersionRequest(
                pipeline=kfp_server_api.V2beta1Pipeline(name="both-from-url"),
                pipeline_version=kfp_server_api.V2beta1PipelineVersion(
                    package_url=kfp_server_api.V2beta1Url(pipeline_url=url))))
        check(both.name == "both-from-url", f"{both}")
        check(c.list_pipeline_versions(both.pipeline_id).total_size == 1, "its version")
    uv = api.pipeline_service_update_pipeline_version(hw, v2.pipeline_version_id,
                                                      kfp_server_api.V2beta1PipelineVersion(display_name="Second!"))
    check(uv.display_name == "Second!", f"{uv}")

    # Deletes: a version; a pipeline with versions is refused without cascade, gone with it.
    c.delete_pipeline_version(hw, v3.pipeline_version_id)
    expect_error(404, c.get_pipeline_version, hw, v3.pipeline_version_id)
    expect_error(400, c.delete_pipeline, hw, needle="Set cascade=true")
    api.pipeline_service_delete_pipeline(hw, cascade=True)
    expect_error(404, c.get_pipeline, hw, needle="not found")
    empty = api.pipeline_service_create_pipeline(kfp_server_api.V2beta1Pipeline(name="no-versions"))
    c.delete_pipeline(empty.pipeline_id)
    expect_error(404, c.get_pipeline, empty.pipeline_id)


def multi_user(c):
    # The cross-view test applied corpus/k8s with kubectl: namespace kubeflow (shared here) and
    # team-a. kfp.Client lists them with the uids kubectl shows (KFP_KUBECTL_UIDS).
    uids = json.loads(os.environ["KFP_KUBECTL_UIDS"])
    shared = {p.name: p.pipeline_id for p in all_pipelines(c)}
    team = {p.name: p.pipeline_id for p in all_pipelines(c, namespace="team-a")}
    for key, uid in uids.items():
        ns, name = key.split("/")
        listed = team if ns == "team-a" else shared
        check(listed.get(name) == uid, f"{key}: kfp lists {listed.get(name)}, kubectl shows {uid}")
    for p in c.list_pipelines(namespace="team-a").pipelines:
        check(p.namespace == "team-a", f"{p}")
    # What kfp uploads, kubectl must see at once (the Rust side checks; print the ids).
    p = c.upload_pipeline(str(CORPUS / "hello_world.yaml"), pipeline_name="from-kfp", namespace="team-a")
    v = c.list_pipeline_versions(p.pipeline_id).pipeline_versions[0]
    print(json.dumps({"uploaded": {"pipeline_id": p.pipeline_id, "version_id": v.pipeline_version_id}}))


def main():
    c = client()
    if MULTI:
        multi_user(c)
    else:
        single_user(c)
    print(f"kfp.Client {kfp.__version__}: {CHECKS} checks passed", file=sys.stderr)


if __name__ == "__main__":
    main()
