"""host.models(): model.static, model.register and model.for_auth, merged as upstream."""

from __future__ import annotations

from .conftest import EXECUTOR, CallLog, MakeHost, StagePlugin


def test_models_are_merged_per_provider_first_in_dispatch_order_wins(
    stage: StagePlugin, make_host: MakeHost, call_log: CallLog
) -> None:
    host = make_host(
        {
            "prov": (
                stage(
                    "prov",
                    '"model_provider":true',
                    PP_MODELS='{"Provider":"Acme","Models":[{"ID":"m1"},{"ID":"m2","OwnedBy":"a"}]}',
                    PP_FOR_AUTH='{"Provider":"acme","Models":[{"ID":"m9"},{"ID":"m1"}]}',
                ),
                20,
            ),
            "reg": (
                stage(
                    "reg",
                    '"model_registrar":true',
                    PP_MODELS=(
                        '{"provider":" acme ","models":[{"id":" m2 "},{"id":"m3"},{"id":" "}]}'
                    ),
                ),
                10,
            ),
            "exe": (
                stage(
                    "exe",
                    EXECUTOR + ',"model_provider":true',
                    PP_MODELS='{"Provider":"other","Models":[{"ID":"m1"}]}',
                ),
                5,
            ),
            "oauth": (
                stage(
                    "oauth",
                    EXECUTOR + ',"model_provider":true,"executor_model_scope":"oauth"',
                    PP_MODELS='{"Provider":"acme","Models":[{"ID":"hidden"}]}',
                    PP_FOR_AUTH='{"Models":[{"ID":"o1"}]}',
                ),
                1,
            ),
            "acme": (stage("acme", EXECUTOR), 0),
        }
    )
    listed = [(m.id, m.provider, m.plugin_id, m.source, m.executor) for m in host.models()]
    assert listed == [
        ("m1", "acme", "prov", "model.static", "exe"),
        ("m2", "acme", "prov", "model.static", "acme"),
        ("m3", "acme", "reg", "model.register", "acme"),
        ("m1", "other", "exe", "model.static", "exe"),
    ]
    assert host.models()[1].info["OwnedBy"] == "a"
    # model.static asked once: the list is kept until the loaded plugins change
    assert len(call_log.calls("model.static")) == 2
    # an oauth-scoped executor serves its auths' models (its provider: executor.identifier)
    with_auth = host.models(({"provider": "ACME", "id": "a1"}, {"provider": "oauth", "id": "a2"}))
    assert [(m.id, m.provider, m.source) for m in with_auth if m.source == "model.for_auth"] == [
        ("m9", "acme", "model.for_auth"),
        ("o1", "oauth", "model.for_auth"),
    ]
    asked = [(c["plugin"], c["request"]["AuthID"]) for c in call_log.calls("model.for_auth")]
    assert asked == [("prov", "a1"), ("oauth", "a2")]
