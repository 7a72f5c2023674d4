"""loom.telemetry.setup(): [telemetry] validation, OTEL_* precedence, providers
installed and removed, sampling, content capture."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from opentelemetry import trace

from loom.config import ProjectConfig, parse_project_config
from loom.errors import ConfigError
from loom.telemetry import (
    bus_spans,
    capture_content,
    current_tracer_provider,
    setup,
    tracing_active,
)
from loom.telemetry.setup import resolve_settings


def project(tmp_path: Path, telemetry: str) -> ProjectConfig:
    source = textwrap.dedent(
        """
        [project]
        name = "demo"

        [telemetry]
        """
    ) + textwrap.dedent(telemetry)
    path = tmp_path / "loom.toml"
    path.write_text(source)
    return parse_project_config(source, path)


def test_defaults(tmp_path: Path) -> None:
    s = resolve_settings(project(tmp_path, ""), env={})
    assert s.enabled and s.exporters == ("file",)
    assert s.trace_dir == tmp_path / ".loom" / "traces"
    assert s.service_name == "demo" and s.sampler == "parentbased_always_on"
    assert s.capture_content is None and s.metrics
    assert s.bus_spans == "all"  # a full trace unless asked otherwise


def test_bus_spans_is_installed_and_restored(tmp_path: Path) -> None:
    s = resolve_settings(project(tmp_path, 'bus_spans = "requests"\n'), env={})
    assert s.bus_spans == "requests"
    assert bus_spans() == "all"
    handle = setup(
        {"exporters": ["file"], "trace_dir": str(tmp_path), "metrics": False, "bus_spans": "none"}
    )
    try:
        assert bus_spans() == "none"
    finally:
        handle.shutdown()
    assert bus_spans() == "all"


def test_bad_exporter_names_key_and_line(tmp_path: Path) -> None:
    p = project(tmp_path, 'service_name = "x"\nexporters = ["file", "jaeger"]\n')
    with pytest.raises(ConfigError) as err:
        resolve_settings(p, env={})
    e = err.value
    assert e.key == "telemetry.exporters" and e.line == 7 and e.path == str(tmp_path / "loom.toml")
    assert "unknown exporter 'jaeger'" in str(e) and "otlp-grpc" in str(e)
    assert "loom.toml:7 [telemetry.exporters]" in str(e)


@pytest.mark.parametrize(
    ("toml", "key", "fragment"),
    [
        ("exporterz = []", "telemetry.exporterz", "unknown key 'exporterz'"),
        ('exporters = ["none", "file"]', "telemetry.exporters", '"none" cannot be combined'),
        ("exporters = 3", "telemetry.exporters", "must be a list"),
        ("sampling_ratio = 1.5", "telemetry.sampling_ratio", "between 0 and 1"),
        ('sampling_ratio = "all"', "telemetry.sampling_ratio", "must be a number"),
        ('capture_content = "yes"', "telemetry.capture_content", "true or false"),
        ('protocol = "http/json"', "telemetry.protocol", "unsupported OTLP protocol"),
        ("headers = { a = 1 }", "telemetry.headers", "table of strings"),
        ("metrics_interval = 0", "telemetry.metrics_interval", "positive"),
        ('bus_spans = "some"', "telemetry.bus_spans", 'one of "all", "requests", "none"'),
        ("bus_spans = true", "telemetry.bus_spans", 'one of "all", "requests", "none"'),
    ],
)
def test_invalid_values(tmp_path: Path, toml: str, key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        resolve_settings(project(tmp_path, toml + "\n"), env={})
    assert err.value.key == key and fragment in str(err.value)
    assert err.value.line is not None


def test_dict_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"\[telemetry.exporters\].*'zipkin'"):
        resolve_settings({"exporters": ["zipkin"]}, env={})
    # A whole-config dict works as well as the table itself.
    s = resolve_settings({"telemetry": {"exporters": "console"}}, env={})
    assert s.exporters == ("console",) and s.service_name == "loom"


def test_environment_wins(tmp_path: Path) -> None:
    p = project(
        tmp_path,
        """
        service_name = "from-toml"
        resource = { "deployment.environment.name" = "dev", team = "a" }
        sampling_ratio = 0.5
        """,
    )
    s = resolve_settings(
        p,
        env={
            "OTEL_SERVICE_NAME": "from-env",
            "OTEL_RESOURCE_ATTRIBUTES": "team=b,region=eu%2Dwest",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_TRACES_SAMPLER": "traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.25",
        },
    )
    assert s.service_name == "from-env"
    assert s.resource["team"] == "b" and s.resource["region"] == "eu-west"
    assert s.resource["deployment.environment.name"] == "dev"
    # An endpoint means spans go there too, next to the default file.
    assert s.exporters == ("file", "otlp-grpc") and s.endpoint == "http://collector:4317"
    assert (s.sampler, s.sampling_ratio) == ("traceidratio", 0.25)
    assert resolve_settings(p, env={"OTEL_SDK_DISABLED": "true"}).enabled is False
    env = {"OTEL_TRACES_EXPORTER": "console,otlp"}
    assert resolve_settings(p, env=env).exporters == ("console", "otlp-http")
    with pytest.raises(ConfigError, match="OTEL_TRACES_SAMPLER"):
        resolve_settings(p, env={"OTEL_TRACES_SAMPLER": "sometimes"})
    with pytest.raises(ConfigError, match="OTEL_TRACES_EXPORTER"):
        resolve_settings(p, env={"OTEL_TRACES_EXPORTER": "zipkin"})


def test_endpoint_in_toml_adds_otlp_with_its_protocol(tmp_path: Path) -> None:
    s = resolve_settings(project(tmp_path, 'endpoint = "http://h:4318"\n'), env={})
    assert s.exporters == ("file", "otlp-http")
    s = resolve_settings(
        project(tmp_path, 'endpoint = "h:4317"\nprotocol = "grpc"\nexporters = []\n'), env={}
    )
    assert s.exporters == ("otlp-grpc",)
    s = resolve_settings(project(tmp_path, 'exporters = ["none"]\nendpoint = "http://h"\n'), env={})
    assert s.enabled is False


def test_setup_installs_writes_and_uninstalls(tmp_path: Path) -> None:
    assert not tracing_active()
    handle = setup(project(tmp_path, "capture_content = true\n"), run_id="run-1")
    try:
        assert tracing_active() and capture_content() is True
        assert current_tracer_provider() is handle.tracer_provider
        with trace.get_tracer("t").start_as_current_span("hello", attributes={"k": 1}):
            pass
    finally:
        handle.shutdown()
    handle.shutdown()  # idempotent
    assert not tracing_active() and capture_content() is False
    assert not trace.get_tracer("t").start_span("after").is_recording()
    assert handle.trace_file == tmp_path / ".loom" / "traces" / "run-1.jsonl"
    line = json.loads(handle.trace_file.read_text())
    (rs,) = line["resourceSpans"]
    res = {a["key"]: a["value"] for a in rs["resource"]["attributes"]}
    assert res["service.name"] == {"stringValue": "demo"}
    assert res["service.instance.id"] == {"stringValue": "run-1"}
    assert rs["scopeSpans"][0]["spans"][0]["name"] == "hello"
    # A second setup in the same process works (a provider per run).
    with setup({"exporters": ["file"], "trace_dir": str(tmp_path / "t2")}) as h2:
        assert tracing_active() and h2.trace_file is not None
        trace.get_tracer("t").start_span("again").end()
    assert "again" in h2.trace_file.read_text()


def test_env_capture_switch_wins_over_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    with setup(project(tmp_path, "capture_content = false\n")):
        assert capture_content() is True


def test_disabled_installs_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    with setup(project(tmp_path, "")) as h:
        assert not h.enabled and not tracing_active() and h.trace_file is None
    assert not (tmp_path / ".loom").exists()


def test_sampling_ratio_zero_is_parent_based(tmp_path: Path) -> None:
    with setup(project(tmp_path, "sampling_ratio = 0.0\nmetrics = false\n")) as h:
        tracer = trace.get_tracer("t")
        tracer.start_span("dropped").end()
        # A sampled remote parent (say, from a traceparent header) keeps its children.
        parent = trace.SpanContext(1, 2, True, trace.TraceFlags(trace.TraceFlags.SAMPLED))
        ctx = trace.set_span_in_context(trace.NonRecordingSpan(parent))
        tracer.start_span("kept", context=ctx).end()
    assert h.trace_file is not None
    text = h.trace_file.read_text()
    assert "kept" in text and "dropped" not in text


def test_console_exporter_writes_to_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with setup({"exporters": ["console"], "metrics": False}):
        trace.get_tracer("t").start_span("to-the-console").end()
    out = capsys.readouterr()
    assert "to-the-console" in out.err and "to-the-console" not in out.out
