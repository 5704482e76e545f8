import contextlib
import io
import os
from collections.abc import Callable
from dataclasses import dataclass

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# two pytest workers share the 2 cores (Makefile): one torch thread each, here and in the servers they start
for _threads in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_threads, "1")
# The attribution kernel runs eagerly in the suite's processes (workers, CLI and notebook subprocesses, Ray actors,
# the own-server apps): compiling it costs each process 7-9 s of Dynamo tracing (inductor's disk cache keeps only
# the C++ build). Its own tests compile it (the `compiled_kernels` fixture), and the shared browser server runs the
# app as it is served, compiled. LMTT_COMPILE=1 make test compiles it everywhere.
os.environ.setdefault("LMTT_COMPILE", "0")

import pytest  # noqa: E402

from lmtt.engine.config import load_config  # noqa: E402
from lmtt.engine.runner import ModelRunner  # noqa: E402
from tests.tiny_models import FAMILIES, tiny_model  # noqa: E402


@pytest.fixture(scope="session", params=FAMILIES)
def tiny_runner(request) -> ModelRunner:
    """A runner over a tiny random model, one per family."""
    return ModelRunner(tiny_model(request.param), tokenizer=None, name=request.param)


@pytest.fixture(scope="session")
def _compiled_kernel_pair():
    """The two attribution kernels as the app builds them (compiled where a compiler exists), once per process."""
    from lmtt.engine import attribution

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LMTT_COMPILE", "1")
        return (
            attribution._Kernel(attribution._small_coords_eager, attribution.small_coords_correction._work),
            attribution._Kernel(attribution._loose_exact_eager, attribution.loose_exact._work),
        )


@pytest.fixture
def compiled_kernels(_compiled_kernel_pair, monkeypatch):
    """This test's attribution uses the compiled kernels (the suite runs them eagerly: LMTT_COMPILE=0 above)."""
    from lmtt.engine import attribution

    monkeypatch.setattr(attribution, "small_coords_correction", _compiled_kernel_pair[0])
    monkeypatch.setattr(attribution, "loose_exact", _compiled_kernel_pair[1])
    return _compiled_kernel_pair


@pytest.fixture(scope="session")
def default_runner() -> ModelRunner:
    """The embedded SmolLM2-135M-Instruct, loaded once per test session."""
    import lmtt

    return lmtt.load_model()


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium under Playwright, one per test process (each test opens its own context)."""
    from playwright.sync_api import sync_playwright

    from lmtt.tools.serve import CHROMIUM, CHROMIUM_ARGS

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """`streamlit run app.py` on a free loopback port, shared by the browser tests of one process.

    One model load and one analysis cache for all of them: each test opens its own browser context, so its own
    session. Tests that need a fresh server or another config.yaml start their own (group "own-servers")."""
    from lmtt.tools.serve import streamlit_server
    from tests.browser import ARTIFACTS

    ARTIFACTS.mkdir(exist_ok=True)
    log = tmp_path_factory.mktemp("server") / "server.log"
    with streamlit_server(log, env={"LMTT_COMPILE": "1"}) as (base, _pid):
        SERVER_LOGS[base] = log
        yield base


SERVER_LOGS: dict = {}  # base URL -> the shared server's log, whose last lines a failed browser test reports


@dataclass(frozen=True)
class CliRun:
    """What `python -m lmtt ...` gave: its exit status and its two streams."""

    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(default_runner, monkeypatch) -> Callable[..., CliRun]:
    """`python -m lmtt ARGS` in this process, on the session's default model instead of a fresh load (about 9 s each).

    The CLI's own code runs unchanged: argument parsing, config, errors, JSON. Only loading the default
    model is shared; any other name goes through the real loader. tests/test_default_model.py keeps
    a real `python -m lmtt` subprocess for the entry point itself.
    """
    from lmtt.tools import cli as cli_module

    real = cli_module.load_model

    def shared(name=None, config=None):
        config = config or load_config()
        return default_runner if (name or config.default_model) == default_runner.name else real(name, config)

    monkeypatch.setattr(cli_module, "load_model", shared)

    def run(*argv: str) -> CliRun:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli_module.main(list(argv))
        return CliRun(code, out.getvalue(), err.getvalue())

    return run


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed browser test reports what each of its open pages showed, and the shared server's last log lines, and
    leaves a screenshot of each page in test-artifacts/FAILED-*.png: CI prints only the report, and a timeout alone
    does not say what was on the screen."""
    report = yield
    b = item.funcargs.get("browser") if hasattr(item, "funcargs") else None
    if report.failed and call.when == "call" and b is not None:
        from tests.browser import ARTIFACTS, page_state

        lines = []
        for n, page in enumerate(p for ctx in b.contexts for p in ctx.pages):
            lines.append(f"page {n}: {page_state(page)}")
            with contextlib.suppress(Exception):
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / f"FAILED-{item.name}-{n}.png"), full_page=True)
        report.sections.append(("open pages", "\n".join(lines) or "no page was open"))
        if (log := SERVER_LOGS.get(item.funcargs.get("server"))) is not None:  # the app's own log: what its runs did
            report.sections.append(("the shared server's last log lines", "\n".join(log.read_text(errors="replace").splitlines()[-40:])))
    return report


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Browser tests first, in xdist groups: `make test` runs two workers (pytest-xdist, --dist loadgroup).

    A group (`pytest.mark.browser(group=...)`) runs on one worker: "shared-server" shares one server (one model
    load, one analysis cache), "own-servers" starts its own. The browser tests are the longest chain, so they go
    first, and a worker that finishes its group takes what is left of the other tests. (Two shared servers, one per
    worker, were slower on 2 cores: 572 s against 500 s, as two Chromiums and two servers competed for them.)

    The group is written into the node id as `@browser-GROUP`, which is what xdist's scheduler reads: xdist 3.8
    writes it to `_nodeid`, which pytest 9 no longer reads (it keeps `_id`), so its own xdist_group marks do
    nothing here.
    """
    browser = [item for item in items if item.get_closest_marker("browser")]
    if getattr(config.option, "loadgroup", False):  # set on xdist workers under --dist loadgroup
        from _pytest.nodeid import coerce_node_id

        for item in browser:
            group = item.get_closest_marker("browser").kwargs.get("group", "shared-server")
            item._id = coerce_node_id(f"{item.nodeid}@browser-{group}")
    items[:] = browser + [item for item in items if not item.get_closest_marker("browser")]
