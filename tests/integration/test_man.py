"""Man pages (issue 18): envelopefs(8), envelopefsctl(8) and envelopefs.conf(5) are
built from docs/man/*.scd, lint clean (groff -ww, mandoc -T lint), and say what the
programs say: every option of every --help is in its man page and every option the
man page lists is in the --help; every setting the code knows is in
envelopefs.conf(5); the bash completion offers every option."""
import re
import subprocess

import pytest

from mounts import BUILD, CTL, DAEMON, REPO

MAN = BUILD / "docs" / "man"
PAGES = ["envelopefs.8", "envelopefsctl.8", "envelopefs.conf.5"]


def help_text(*args):
    return subprocess.run([*map(str, args), "--help"], capture_output=True, text=True,
                          check=True).stdout


def rendered(page):
    """The page as text, no overstrike: what `man` shows."""
    path = MAN / page
    assert path.exists(), f"{path} not built: install scdoc (tools/setup.sh) and rebuild"
    return subprocess.run(["groff", "-man", "-Tascii", "-P-cbou", str(path)], capture_output=True,
                          text=True, check=True).stdout


def section(text, start, end=None):
    """The lines of @text after the line @start, up to the one @end accepts."""
    lines = text.splitlines()
    i = next(n for n, l in enumerate(lines) if l.strip() == start)
    out = []
    for line in lines[i + 1:]:
        if end and end(line):
            break
        out.append(line)
    return "\n".join(out)


@pytest.mark.parametrize("page", PAGES)
def test_lint_clean(page):
    rendered(page)  # built
    groff = subprocess.run(["groff", "-ww", "-z", "-man", str(MAN / page)], capture_output=True,
                           text=True)
    assert groff.returncode == 0 and groff.stderr == "", groff.stderr
    # Errors only: scdoc writes a paragraph macro after each heading, which mandoc's style
    # warnings count.
    mandoc = subprocess.run(["mandoc", "-T", "lint", "-W", "error", str(MAN / page)],
                            capture_output=True, text=True)
    assert mandoc.returncode == 0, mandoc.stdout + mandoc.stderr


def daemon_help_options():
    text = help_text(DAEMON)
    ours = text.split("envelopefs options (-o):", 1)[1].split("Secrets are", 1)[0]
    options = set()
    for line in ours.splitlines():
        m = re.match(r"    ([a-z_]+(?:=\S*)?(?:, [a-z_]+)*)", line)
        if m:
            options |= {"-o " + o.split("=")[0] for o in m.group(1).split(", ")}
    fuse = text.split("FUSE options:", 1)[1]
    options |= {"-o " + o for o in re.findall(r"-o ([a-z_]+)", fuse)}
    options |= set(re.findall(r"(?<![\w-])(-[a-zA-Z]|--[a-z][a-z-]+)\b", fuse))
    return options - {"-o"}


def man_options(text):
    """Options a man page's tagged paragraphs name: -x, --long, -o name[=...]."""
    options = set()
    for line in text.splitlines():
        if not re.match(r" {7}-", line):
            continue
        options |= {"-o " + o for o in re.findall(r"-o ([a-z_]+)", line)}
        options |= set(re.findall(r"(?<![\w-])(-[a-zA-Z]|--[a-z][a-z-]+)\b", line))
    return options - {"-o"}


def test_daemon_help_and_man_page_agree():
    in_help = daemon_help_options()
    assert {"-o cache_entries", "-o log_level", "-o dek_pool", "-o prefetch", "-o shared",
            "-o config", "-f", "-o max_threads"} <= in_help
    in_man = man_options(section(rendered("envelopefs.8"), "OPTIONS",
                                 lambda l: l.startswith("ENVIRONMENT")))
    assert in_help - in_man == set(), "in --help, not in envelopefs(8)"
    assert in_man - in_help == set(), "in envelopefs(8), not in --help"


def ctl_commands():
    text = help_text(CTL)
    return re.findall(r"^  ([a-z]+)  ", text.split("Commands:", 1)[1], re.M)


def ctl_help_options(cmd):
    text = help_text(CTL, cmd).split("Exit status:", 1)[0]
    return set(re.findall(r"(?<![\w-])(-[a-zA-Z]|--[a-z][a-z-]+)\b", text)) - {"-h", "--help"}


def test_ctl_every_command_and_option_in_man_page():
    man = rendered("envelopefsctl.8")
    commands = section(man, "COMMANDS", lambda l: l.startswith("ENVIRONMENT"))
    in_man = re.findall(r"^   ([a-z]+)$", commands, re.M)
    assert sorted(in_man) == sorted(ctl_commands())
    for cmd in ctl_commands():
        body = section(commands, cmd, lambda l: re.match(r"^   [a-z]+$", l))
        documented = set(re.findall(r"(?<![\w-])(-[a-zA-Z]|--[a-z][a-z-]+)\b", body))
        helped = ctl_help_options(cmd)
        assert helped - documented == set(), f"{cmd}: in --help, not in envelopefsctl(8)"
        assert documented - helped == set(), f"{cmd}: in envelopefsctl(8), not in --help"


def test_bash_completion_offers_every_option():
    script = REPO / "tools" / "completion" / "envelopefsctl"
    for cmd in ctl_commands():
        offered = subprocess.run(
            ["bash", "-c", f"complete() {{ :; }}; source '{script}'; _envelopefsctl_options {cmd}"],
            capture_output=True, text=True, check=True).stdout.split()
        assert ctl_help_options(cmd) - set(offered) == set(), cmd
    syntax = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr


def known_settings(source):
    """The keys a provider accepts, from its known_settings table."""
    text = (REPO / source).read_text()
    table = re.search(r"known_settings\[\] = \{(.*?)\};", text, re.S).group(1)
    if "HTTPCFG_KEYS" in table:  # the HTTP providers' shared settings (kms/httpcfg.h)
        shared = (REPO / "kms" / "httpcfg.h").read_text()
        table += re.search(r"#define HTTPCFG_KEYS(.*?)\n\n", shared, re.S).group(1)
    return set(re.findall(r'"kms:(\w+)"', table)) - {"provider"}


def conf_subsection(name):
    return section(section(rendered("envelopefs.conf.5"), "KMS SECTION",
                           lambda l: l.startswith("DAEMON SECTION")), name,
                   lambda l: re.match(r"^   [a-z0-9]+$", l) and l.strip() != name)


def terms(text):
    """The tagged terms of a man page section: the lines at the paragraph indent."""
    out = set()
    for line in text.splitlines():
        if re.match(r" {7}[a-z_]+(, [a-z_]+)*$", line):
            out |= set(line.strip().split(", "))
    return out


def providers():
    """Every provider kms/kms.c knows (its KMS_PROVIDERS list): a new one needs its section."""
    text = (REPO / "kms" / "kms.c").read_text()
    listed = re.search(r"#define KMS_PROVIDERS\(X\)(.*?)\n\n", text, re.S).group(1)
    return re.findall(r"X\((\w+)\)", listed)


@pytest.mark.parametrize("provider", providers())
def test_conf_page_lists_every_kms_setting(provider):
    documented = terms(conf_subsection(provider))
    assert documented == known_settings(f"kms/{provider}.c")


def test_conf_page_lists_every_volume_and_daemon_setting():
    man = rendered("envelopefs.conf.5")
    volume = terms(section(man, "VOLUME SECTION", lambda l: l.startswith("KMS SECTION")))
    source = (REPO / "fs" / "volume.c").read_text()
    keys = re.search(r"volume_keys\[\] = \{(.*?)\};", source, re.S).group(1)
    assert volume == set(re.findall(r'"volume:(\w+)"', keys))
    daemon = terms(section(man, "DAEMON SECTION", lambda l: l.startswith("EXAMPLES")))
    settings = {o[3:] for o in daemon_help_options() if o.startswith("-o ")}
    # Mount options that are not [daemon] settings (state_dir is where the host's state lives,
    # so it cannot come from a settings file; accept_rollback is for one mount).
    settings -= {"config", "shared", "noshared", "allow_other", "no_default_permissions",
                 "clone_fd", "max_threads", "max_idle_threads", "allow_root", "auto_unmount",
                 "debug", "state_dir", "accept_rollback"}
    settings.add("shared")  # shared=auto|true|false, besides the -o shared flag
    assert daemon == settings
