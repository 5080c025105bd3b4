"""kfp.Client (kfp 2.17.0) reads migrated pipelines by the ids they had in KFP's database.

Run by conformance/tests/migrate.rs against `serve --dev --kfp-multi-user` on a store that
`kfp-apiserver migrate` filled. Environment: KFP_HOST, KFP_TOKEN, KFP_CA, KFP_SUITE_HOME, and
KFP_EXPECTED: JSON {"pipelines": {uid: [namespace, name]}, "versions": {uid: pipeline uid}}.
Every check raises on failure; the script prints the number of checks at the end.
"""

import json
import os

import kfp

CHECKS = 0


def check(cond, what):
    global CHECKS
    CHECKS += 1
    if not cond:
        raise AssertionError(what)


def main():
    os.environ["HOME"] = os.environ["KFP_SUITE_HOME"]
    expected = json.loads(os.environ["KFP_EXPECTED"])
    client = kfp.Client(
        host=os.environ["KFP_HOST"],
        existing_token=os.environ["KFP_TOKEN"],
        ssl_ca_cert=os.environ["KFP_CA"],
    )
    for pid, (namespace, name) in expected["pipelines"].items():
        p = client.get_pipeline(pid)
        check(p.pipeline_id == pid, f"get_pipeline({pid}) answered {p.pipeline_id}")
        check(p.name == name, f"{pid}: name {p.name} != {name}")
        # Multi-user mode: pipelines in the shared namespace (kubeflow) are KFP's shared ones,
        # shown without a namespace, as KFP's database had them.
        want_ns = "" if namespace == "kubeflow" else namespace
        check((p.namespace or "") == want_ns, f"{pid}: namespace {p.namespace} != {want_ns}")
        listed = client.list_pipeline_versions(pid, page_size=100)
        got = sorted(v.pipeline_version_id for v in (listed.pipeline_versions or []))
        want = sorted(v for v, p2 in expected["versions"].items() if p2 == pid)
        check(got == want, f"versions of {pid}: {got} != {want}")
    for vid, pid in expected["versions"].items():
        v = client.get_pipeline_version(pid, vid)
        check(v.pipeline_version_id == vid, f"get_pipeline_version({pid}, {vid})")
        check(v.pipeline_id == pid, f"{vid}: pipeline_id {v.pipeline_id} != {pid}")
        check(v.pipeline_spec is not None, f"{vid}: no pipeline_spec")
    print(f"{CHECKS} checks passed")


if __name__ == "__main__":
    main()
