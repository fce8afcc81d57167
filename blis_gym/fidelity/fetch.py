"""`blis-gym fetch-data`: download the measurements blis-gym may not redistribute.

The inference-perf outputs of BLIS's Llama-2-7B training runs live in the public repository
inference-sim/training, which carries no licence, so they are not shipped; this command
fetches them from that repository at a pinned commit and keeps a file only when its sha256
matches the hash recorded here (computed from a verified copy). Stdlib only (urllib).
"""
from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from blis_gym.errors import ConfigError

__all__ = ["FILES", "GITHUB_RAW", "REPO", "COMMIT", "fetch_data"]

REPO = "inference-sim/training"
COMMIT = "ed5c1d26900e6909758d5e1641a18edaf56a1caf"
FOLDER = "default_args"
GITHUB_RAW = "https://raw.githubusercontent.com"
MAX_BYTES = 50 * 2**20          # no file of the set is near this: a bigger answer is not it

#: (path under default_args/, sha256) of every file fetched
FILES: tuple[tuple[str, str], ...] = (
    ("20260217-155451-llama-2-7b-tp1-codegen/exp-config.yaml", "ada7e25e944b1858808e39b3ac07177b021502cecf4c08529ec7f05619f53a0d"),
    ("20260217-155451-llama-2-7b-tp1-codegen/profile.yaml", "e72908b2acbd29eb279dd0560ad56d141c23fbe69f8e47f615a348b8b93bc93a"),
    ("20260217-155451-llama-2-7b-tp1-codegen/results/config.yaml", "978bbb7cc2efac4ed9bd2c9b195fda166bb0ab32394b04919d160b05fcabacd7"),
    ("20260217-155451-llama-2-7b-tp1-codegen/results/stage_0_lifecycle_metrics.json", "89b1db67a8ac03b9057541620089caff2815a3feac30eb6b2bd04f8d09231d77"),
    ("20260217-155451-llama-2-7b-tp1-codegen/results/stage_1_lifecycle_metrics.json", "084f980217702cf9deb993443a480352c65b2cf75b9e40b8e56fb0e809eb0fa9"),
    ("20260217-155451-llama-2-7b-tp1-codegen/results/summary_lifecycle_metrics.json", "aeeb856636f80b788b5ccc03b490a775ec75943a1f96eeebaf9532619a7cc739"),
    ("20260217-155451-llama-2-7b-tp1-codegen/vllm_logging.json", "a529a721b1e880948872e1d894559771614f5513536694eca0d4d493052a0e33"),
    ("20260217-162547-llama-2-7b-tp1-roleplay/exp-config.yaml", "ada7e25e944b1858808e39b3ac07177b021502cecf4c08529ec7f05619f53a0d"),
    ("20260217-162547-llama-2-7b-tp1-roleplay/profile.yaml", "382f1ee8bb01d2907c954e58ccfab3166638abb91877d6cd4d4a360df2a3ed7f"),
    ("20260217-162547-llama-2-7b-tp1-roleplay/results/config.yaml", "cbf38ac734f56f7917f9f6dd22d1146fe962b51b8a4168b95f0c3c22fbd13b62"),
    ("20260217-162547-llama-2-7b-tp1-roleplay/results/stage_0_lifecycle_metrics.json", "97ddd4dfb9eefc1fc1cb86be5d56d639808bae4726826e2658a9262f22323d86"),
    ("20260217-162547-llama-2-7b-tp1-roleplay/results/summary_lifecycle_metrics.json", "0703e4d562bdb69431c4a832bc79ab0f63fbc49f81fb0bdbed69c73f02b141f6"),
    ("20260217-162547-llama-2-7b-tp1-roleplay/vllm_logging.json", "91eeb03d8fb1a135e42e3d05df92c800459cbf59bd95ce46c00b2b74055eedcd"),
    ("20260217-170634-llama-2-7b-tp1-reasoning/exp-config.yaml", "ada7e25e944b1858808e39b3ac07177b021502cecf4c08529ec7f05619f53a0d"),
    ("20260217-170634-llama-2-7b-tp1-reasoning/profile.yaml", "3d6301ceeab38f22f0700ddbef0f3a60788c65cdb5bae01e6f946ac029ba9603"),
    ("20260217-170634-llama-2-7b-tp1-reasoning/results/config.yaml", "73979020c4009623bc761953f150f048a62700c866b181098c2c113fd55ef038"),
    ("20260217-170634-llama-2-7b-tp1-reasoning/results/stage_0_lifecycle_metrics.json", "344684c6ed2401781f63eaaa9e033d78fff5e69caa545bc4d7aad04b75d03ebb"),
    ("20260217-170634-llama-2-7b-tp1-reasoning/results/summary_lifecycle_metrics.json", "2a4f7b0afd35dd7c0a01094a8b9319843af6e9bab15afadc42b0a68883dacfdc"),
    ("20260217-170634-llama-2-7b-tp1-reasoning/vllm_logging.json", "695cba3eb97567d1c7ad7fd35fa6218b3e338ffee3ae8081e5e7a3a6b5b7b1dc"),
    ("20260217-231439-llama-2-7b-tp1-general/exp-config.yaml", "ada7e25e944b1858808e39b3ac07177b021502cecf4c08529ec7f05619f53a0d"),
    ("20260217-231439-llama-2-7b-tp1-general/profile.yaml", "a033f58c72a3760d513b3d1a946ba2a41139a2998b3ee076d93ac7483b0f1446"),
    ("20260217-231439-llama-2-7b-tp1-general/results/config.yaml", "3816d0043e19309e3e9d3585503bf9530000148d2e3605f265e13a39241e2883"),
    ("20260217-231439-llama-2-7b-tp1-general/results/stage_0_lifecycle_metrics.json", "db23381ff1653969d90977ed1e2ba8d5c0cc1fdd865d1d951962b87d329ca8a7"),
    ("20260217-231439-llama-2-7b-tp1-general/results/stage_1_lifecycle_metrics.json", "8493bae5ffe855ed5cafca9fb83c4f80cf17be1ecdb2a4d8877e77d45b960326"),
    ("20260217-231439-llama-2-7b-tp1-general/results/summary_lifecycle_metrics.json", "afdd1153aa45972a5783e7f9346d31575455b66280b2edb7133b490fb1f992e0"),
    ("20260217-231439-llama-2-7b-tp1-general/vllm_logging.json", "eaac4e80d1f60e7c417b84da0a44c64454f6934e54c24658b0e1233d90e4b5ce"),
)


def _download(url: str, timeout_s: float) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout_s) as r:        # noqa: S310 (https or a file:// mirror)
        data = r.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise ConfigError("fetch-data", f"{url}: larger than {MAX_BYTES >> 20} MiB, not the expected file")
    return data


def fetch_data(dest: str | Path, *, base_url: str | None = None, files=FILES, timeout_s: float = 60.0,
               log: Callable[[str], None] | None = None) -> list[Path]:
    """Download `files` into dest/<path> and check each sha256; a file already there with the
    right hash is kept. base_url replaces https://raw.githubusercontent.com/<repo>/<commit>/default_args
    (a mirror, or a file:// folder). Raises ConfigError naming the first file that cannot be
    fetched or whose hash differs (nothing is written for it)."""
    dest = Path(dest)
    base = (base_url or f"{GITHUB_RAW}/{REPO}/{COMMIT}/{FOLDER}").rstrip("/")
    written = []
    for rel, sha in files:
        target = dest / rel
        if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == sha:
            written.append(target)
            continue
        url = f"{base}/{rel}"
        try:
            data = _download(url, timeout_s)
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", None) or e
            raise ConfigError("fetch-data", f"cannot download {url}: {reason}") from None
        got = hashlib.sha256(data).hexdigest()
        if got != sha:
            raise ConfigError("fetch-data", f"{url}: sha256 {got[:12]}... differs from the pinned {sha[:12]}...; "
                                            f"not saved (the source changed or the download is corrupt)")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        except OSError as e:
            raise ConfigError("--dest", f"cannot write {target}: {e.strerror}") from None
        written.append(target)
        if log:
            log(f"{rel}: ok")
    return written
