"""The deployment files agree with each other and with the tree (suite 'deploy').

- docker-compose.yml is valid for Compose (`docker compose config -q`, else Debian's
  `docker-compose config -q`); skipped (77) when neither is installed.
- Its services: the single-node `baton`, the multi-node `head`, `rank1`, `rank2` (profile multi),
  each with a restart policy, the model volume on /models and a healthcheck; published ports only
  on the HTTP services; every program a service runs (entrypoint, healthcheck) exists: a deploy/
  script (executable, copied into the image, and the role it is given is one it knows), a
  binary meson installs, or a package the runtime image installs.
- Dockerfile: the build/runtime stages (CPU and CUDA) with -Dtests=false, -Dcuda=enabled in the
  CUDA build, debian:12 / debian:12-slim bases, COPY --from naming a real stage, a HEALTHCHECK
  with curl on /health, a non-root USER, ENTRYPOINT ["baton"], a CMD serving from /models.
- .dockerignore keeps what the build needs; the netns tests run the same deploy/ scripts;
  every shell script under deploy/ and tests/integration/netns/ passes `bash -n`.
"""
import fnmatch
import json
import os
import re
import shutil
import subprocess

import pytest

from harness import SRC

COMPOSE = os.path.join(SRC, "docker-compose.yml")
DOCKERFILE = os.path.join(SRC, "Dockerfile")

failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)
    return cond


def run(cmd, **kw):
    env = dict(os.environ)
    # The file must validate with no variables set (defaults everywhere).
    for k in list(env):
        if k.startswith("BATON_") or k.startswith("COMPOSE_"):
            env.pop(k)
    return subprocess.run(cmd, cwd=SRC, env=env, capture_output=True, text=True, timeout=40, **kw)


def compose_cmd():
    """The compose command line that works here, or None."""
    if shutil.which("docker"):
        r = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=20)
        if r.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def yaml_to_obj(text):
    try:
        import yaml  # PyYAML: a dependency of Debian's docker-compose

        return yaml.safe_load(text)
    except ImportError:
        r = subprocess.run(["/usr/bin/python3", "-c",
                            "import json,sys,yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"],
                           input=text, capture_output=True, text=True, timeout=20)
        if r.returncode != 0:
            pytest.skip("no YAML parser (python3-yaml) to read `config`'s output")
        return json.loads(r.stdout)


def load_compose(cmd):
    base = cmd + ["-f", COMPOSE, "--profile", "multi"]
    r = run(base + ["config", "-q"])
    if not check(r.returncode == 0, f"{' '.join(cmd)} config -q failed:\n{r.stderr}"):
        return None
    r = run(base + ["config", "--format", "json"])
    if r.returncode == 0 and r.stdout.lstrip().startswith("{"):
        return json.loads(r.stdout)
    r = run(base + ["config"])
    check(r.returncode == 0, f"config failed: {r.stderr}")
    return yaml_to_obj(r.stdout)


def dockerfile_stages(text):
    """[(name, base, [lines])] of the Dockerfile, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", text)
    stages = []
    for line in joined.splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        m = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?\s*$", s, re.I)
        if m:
            stages.append((m.group(2) or "", m.group(1), []))
        elif stages:
            stages[-1][2].append(s)
    return stages


def deploy_roles(script):
    """The roles a deploy/ script's top-level `case "${1:-}"` accepts."""
    with open(script) as f:
        text = f.read()
    m = re.search(r'^case "\$\{1:-\}" in\n(.*?)^esac', text, re.S | re.M)
    if not m:
        return set()
    roles = set()
    for line in m.group(1).splitlines():
        lm = re.match(r"^([a-z][a-z|\- ]*)\)", line)
        if lm:
            roles.update(x.strip() for x in lm.group(1).split("|"))
    return roles


def main():
    cmd = compose_cmd()
    if cmd is None:
        pytest.skip("no compose validator (docker compose plugin or Debian's docker-compose)")
    for path in (COMPOSE, DOCKERFILE, os.path.join(SRC, ".dockerignore")):
        if not check(os.path.isfile(path), f"{path} is missing"):
            return 1

    # ---- Dockerfile ----
    with open(DOCKERFILE) as f:
        dtext = f.read()
    stages = dockerfile_stages(dtext)
    names = [s[0] for s in stages]
    by_name = {s[0]: s for s in stages}
    for want in ("build", "runtime", "build-cuda", "runtime-cuda"):
        check(want in names, f"Dockerfile: no stage '{want}'")
    check(names and names[-1] == "runtime", "Dockerfile: the CPU runtime must be the last (default) stage")
    if "build" in by_name:
        check(by_name["build"][1] == "debian:12", "Dockerfile: build stage must be FROM debian:12")
        body = " ".join(by_name["build"][2])
        check("-Dtests=false" in body and "meson install" in body, "Dockerfile: build: meson setup -Dtests=false + install")
        for pkg in ("meson", "ninja-build", "gcc", "libmicrohttpd-dev", "libcjson-dev", "libmpich-dev"):
            check(re.search(rf"\b{re.escape(pkg)}\b", body), f"Dockerfile: build stage does not install {pkg}")
    if "build-cuda" in by_name:
        check(by_name["build-cuda"][1].startswith("nvidia/cuda:"), "Dockerfile: build-cuda must be FROM nvidia/cuda")
        check("-Dcuda=enabled" in " ".join(by_name["build-cuda"][2]), "Dockerfile: build-cuda lacks -Dcuda=enabled")
    runtime_pkgs = set()
    for rt in ("runtime", "runtime-cuda"):
        if rt not in by_name:
            continue
        _, base, lines = by_name[rt]
        if rt == "runtime":
            check(base == "debian:12-slim", "Dockerfile: runtime must be FROM debian:12-slim")
        body = "\n".join(lines)
        for l in lines:
            if l.startswith("RUN") and "apt-get install" in l:
                runtime_pkgs.update(re.findall(r"(?<![-\w])([a-z0-9][a-z0-9.+-]+)", l.split("apt-get install", 1)[1]))
        for pkg in ("curl", "mpich", "socat"):
            check(pkg in runtime_pkgs, f"Dockerfile: {rt} does not install {pkg}")
        check(not any(p.endswith("-dev") for p in runtime_pkgs), f"Dockerfile: {rt} installs -dev packages")
        hc = [l for l in lines if l.startswith("HEALTHCHECK")]
        check(len(hc) == 1 and re.search(r"CMD curl -fsS \S*http://127\.0\.0\.1:\$\{PORT\}/health", hc[0]),
              f"Dockerfile: {rt} needs HEALTHCHECK ... CMD curl -fsS http://127.0.0.1:${{PORT}}/health")
        users = [l.split()[1] for l in lines if l.startswith("USER ")]
        check(users and users[-1] not in ("root", "0"), f"Dockerfile: {rt} must run as a non-root USER")
        check(users and users[-1] == "baton" and "useradd" in body and " baton" in body,
              f"Dockerfile: {rt} must create and use the user baton")
        check('ENTRYPOINT ["baton"]' in lines, f'Dockerfile: {rt} needs ENTRYPOINT ["baton"]')
        cmd_lines = [l for l in lines if l.startswith("CMD ")]
        check(cmd_lines and '"serve"' in cmd_lines[-1] and "/models/" in cmd_lines[-1],
              f"Dockerfile: {rt} default CMD must serve a model from /models")
        check(any(l.startswith("ENV ") and "PORT=" in l for l in lines), f"Dockerfile: {rt} must set PORT")
        check('VOLUME ["/models"]' in lines, f"Dockerfile: {rt} lacks VOLUME /models")
    copied = set()
    for name, _, lines in stages:
        for l in lines:
            m = re.match(r"COPY\s+--from=(\S+)", l)
            if m:
                check(m.group(1) in names[: names.index(name)], f"Dockerfile: {name}: COPY --from={m.group(1)} is no earlier stage")
            elif l.startswith("COPY "):
                parts = l.split()[1:]
                for src in parts[:-1]:
                    if src != ".":
                        check(os.path.exists(os.path.join(SRC, src)), f"Dockerfile: COPY source {src} does not exist")
                        copied.add(src)
    with open(os.path.join(SRC, ".dockerignore")) as f:
        ignored = [l.strip().lstrip("/") for l in f if l.strip() and not l.startswith("#")]
    for needed in ("meson.build", "meson_options.txt", "common/log.c", "server/static/index.html",
                   "tools/embed.py", "deploy/baton-node", "deploy/baton-hostexec"):
        parts = needed.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        check(not any(fnmatch.fnmatchcase(p, pat) for p in prefixes for pat in ignored),
              f".dockerignore excludes {needed}, which the image needs")

    # ---- meson: what gets installed ----
    with open(os.path.join(SRC, "meson.build")) as f:
        mtext = f.read()
    installed = set(re.findall(r"executable\('([\w-]+)'[^)]*?install: true", mtext, re.S))
    installed |= set(re.findall(r"'(baton-[\w-]+)': 'tools/", mtext))  # the tools table, installed

    # ---- compose ----
    conf = load_compose(cmd)
    if conf is None:
        return report()
    services = conf.get("services", {})
    check(set(services) >= {"baton", "head", "rank1", "rank2"}, f"compose: services {sorted(services)}")
    deploy_dir = os.path.join(SRC, "deploy")
    for name, svc in services.items():
        multi = name != "baton"
        check(("multi" in (svc.get("profiles") or [])) == multi, f"compose: {name}: profile multi is {'missing' if multi else 'unexpected'}")
        check(svc.get("restart") in ("always", "unless-stopped", "on-failure"), f"compose: {name}: no restart policy")
        vols = svc.get("volumes") or []
        targets = [(v.get("target") if isinstance(v, dict) else v.split(":")[1]) for v in vols]
        check("/models" in targets, f"compose: {name}: no model volume on /models")
        check(svc.get("healthcheck", {}).get("test"), f"compose: {name}: no healthcheck")
        check(svc.get("build", {}).get("target", "runtime") == "runtime" or "image" in svc, f"compose: {name}: build target")
        is_http = name in ("baton", "head")
        check(bool(svc.get("ports")) == is_http, f"compose: {name}: ports {'missing' if is_http else 'published'}")
        entry = svc.get("entrypoint") or ["baton"]
        if isinstance(entry, str):
            entry = entry.split()
        command = svc.get("command") or []
        if isinstance(command, str):
            command = command.split()
        programs = [(entry[0], command[:1])]
        test = svc.get("healthcheck", {}).get("test") or []
        if test and test[0] in ("CMD", "CMD-SHELL"):
            programs.append((test[1].split()[0], test[2:3] if test[0] == "CMD" else []))
        for prog, args in programs:
            base = os.path.basename(prog)
            script = os.path.join(deploy_dir, base)
            if os.path.exists(script):
                check(os.access(script, os.X_OK), f"compose: {name}: deploy/{base} is not executable")
                check(f"deploy/{base}" in copied, f"compose: {name}: deploy/{base} is not copied into the image")
                if args:
                    check(args[0] in deploy_roles(script), f"compose: {name}: deploy/{base} has no role '{args[0]}'")
            elif base in installed:
                pass
            else:
                check(base in runtime_pkgs, f"compose: {name}: runs '{prog}', which nothing provides")
        if entry[0] == "baton-node":
            env = svc.get("environment") or {}
            if isinstance(env, list):
                env = dict(e.split("=", 1) for e in env)
            check("BATON_CLUSTER_TOKEN" in env, f"compose: {name}: BATON_CLUSTER_TOKEN not passed")
            if command[:1] == ["serve"]:
                hosts = env.get("BATON_HOSTS", "").split(",")
                check(hosts[:1] == [svc.get("hostname")], f"compose: {name}: BATON_HOSTS must start with its own hostname")
                for h in hosts[1:]:
                    check(h in services and services[h].get("hostname") == h, f"compose: {name}: host {h} is no service")
                    check(h in (svc.get("depends_on") or {}), f"compose: {name}: does not wait for {h}")
                ranks = command[command.index("--ranks") + 1] if "--ranks" in command else "1"
                check(str(ranks) == str(len(hosts)), f"compose: {name}: --ranks {ranks} but {len(hosts)} hosts")

    # ---- the namespace tests run these very scripts ----
    netns = os.path.join(SRC, "tests/integration/netns")
    with open(os.path.join(netns, "nswrap.sh")) as f:
        check("deploy/baton-hostexec" in f.read(), "nswrap.sh does not run deploy/baton-hostexec")
    with open(os.path.join(netns, "test_netns.sh")) as f:
        check('"$deploy/baton-node"' in f.read(), "test_netns.sh does not run deploy/baton-node")
    scripts = [os.path.join(deploy_dir, n) for n in sorted(os.listdir(deploy_dir))]
    scripts += [os.path.join(netns, n) for n in sorted(os.listdir(netns)) if n.endswith(".sh")]
    for s in scripts:
        check(os.access(s, os.X_OK), f"{os.path.relpath(s, SRC)} is not executable")
        r = subprocess.run(["bash", "-n", s], capture_output=True, text=True, timeout=20)
        check(r.returncode == 0, f"bash -n {os.path.relpath(s, SRC)}: {r.stderr}")
    return report()


def report():
    for f in failures:
        print("FAIL:", f)
    if failures:
        return 1
    print("deploy files OK")
    return 0


def test_deploy_files():
    assert main() == 0, "\n".join(failures)
