"""The fields of a kind = "postgres" program: defaults, the official image's variables, and one
line per mistake that names file, program and field, never showing a password."""

import os
import signal
import textwrap

import pytest

from hive_init.config import ConfigError, loads
from hive_init.postgres.spec import FIELDS, Database, PostgresSpec, Role

ROOT = os.geteuid() == 0
pytestmark = pytest.mark.usefixtures("postgres_user")  # as root, the default user must exist
OFFICIAL_VARS = ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_PASSWORD_FILE", "POSTGRES_DB",
                 "POSTGRES_INITDB_ARGS", "PGDATA")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in OFFICIAL_VARS:
        monkeypatch.delenv(name, raising=False)


def load(body: str, env: dict | None = None):
    text = '[programs.postgres]\nkind = "postgres"\n' + textwrap.dedent(body)
    return loads(text, "x.toml", env if env is not None else dict(os.environ))


def program(body: str = "", env: dict | None = None):
    return load(body, env).programs["postgres"]


def error(body: str, env: dict | None = None) -> str:
    with pytest.raises(ConfigError) as e:
        load(body, env)
    text = str(e.value)
    assert "\n" not in text
    return text


def test_the_interface_fields():
    assert {"data_dir", "bin_dir", "port", "listen_addresses", "socket_dir", "init_dir", "initdb_args",
            "conf_file", "hba_file", "settings", "superuser", "superuser_password", "superuser_password_file",
            "roles", "databases", "ready_database", "ready_role"} <= FIELDS


def test_defaults():
    spec = program()
    pg = spec.options
    assert isinstance(pg, PostgresSpec)
    assert (pg.data_dir, pg.port, pg.listen_addresses, pg.init_dir) == (
        "/var/lib/postgresql/data", 5432, "localhost", "/docker-entrypoint-initdb.d")
    assert (pg.superuser, pg.superuser_password, pg.roles, pg.databases) == ("postgres", None, (), ())
    assert (pg.ready_database, pg.ready_role, pg.scripts_database) == ("postgres", "postgres", "postgres")
    assert spec.stop_signal == signal.SIGINT
    assert spec.readiness is not None and spec.readiness.kind == "postgres"
    assert (spec.readiness.period, spec.readiness.timeout) == (5.0, 3.0)
    if ROOT:
        assert spec.run_as is not None and spec.run_as.user == "postgres"
        assert pg.socket_dir == "/run/postgresql"
    else:
        assert spec.run_as is None


def test_a_full_table():
    spec = program("""
        data_dir = "/srv/pg/data"
        bin_dir = "/usr/lib/postgresql/18/bin"
        port = 5433
        listen_addresses = ["127.0.0.1", "::1"]
        socket_dir = "/run/pg"
        init_dir = "/init"
        initdb_args = ["--data-checksums"]
        conf_file = "/etc/pg/extra.conf"
        hba_file = "/etc/pg/hba.conf"
        settings = { shared_buffers = "128MB", max_connections = 100, fsync = true, "auto_explain.log_min_duration" = 0.5 }
        superuser = "admin"
        superuser_password = "su-secret"
        stop_signal = "TERM"
        [readiness]
        postgres = true
        period = "2s"
        [[roles]]
        name = "hive"
        password = "hive-secret"
        createdb = true
        [[roles]]
        name = "readonly"
        login = false
        [[databases]]
        name = "hive_genie"
        owner = "hive"
        extensions = ["vector", "pg_trgm", "vector"]
        [[databases]]
        name = "other"
    """.replace("[readiness]", "[programs.postgres.readiness]").replace("[[roles]]", "[[programs.postgres.roles]]")
        .replace("[[databases]]", "[[programs.postgres.databases]]"))
    pg = spec.options
    assert pg.listen_addresses == "127.0.0.1,::1"
    assert pg.settings == (("shared_buffers", "128MB"), ("max_connections", "100"), ("fsync", "on"),
                           ("auto_explain.log_min_duration", "0.5"))
    assert pg.roles == (Role("hive", "hive-secret", createdb=True), Role("readonly", None, login=False))
    assert pg.databases == (Database("hive_genie", "hive", ("vector", "pg_trgm")), Database("other", "admin"))
    assert (pg.ready_database, pg.ready_role) == ("hive_genie", "hive")
    assert pg.password_of("hive") == "hive-secret" and pg.password_of("admin") == "su-secret"
    assert spec.stop_signal == signal.SIGTERM and spec.readiness.period == 2.0
    assert "secret" not in repr(pg)  # specs end up in debug output; passwords never do


def test_specs_compare_by_value():
    body = """
        [[programs.postgres.roles]]
        name = "app"
        password = "pw-one"
        [[programs.postgres.databases]]
        name = "app"
        owner = "app"
        extensions = ["vector"]
    """
    assert program(body) == program(body)
    assert program(body) != program(body.replace("pw-one", "pw-two"))


def test_every_password_is_a_secret(tmp_path):
    secret_file = tmp_path / "app.pw"
    secret_file.write_text("from-a-file\n")
    config = load(f"""
        superuser_password = "plain-super"
        [[programs.postgres.roles]]
        name = "app"
        password_file = "{secret_file}"
        [[programs.postgres.roles]]
        name = "other"
        password = "plain-other"
    """)
    assert {"plain-super", "from-a-file", "plain-other"} <= config.secrets
    assert config.programs["postgres"].options.password_of("app") == "from-a-file"  # no trailing newline


def test_the_official_image_variables(tmp_path, monkeypatch):
    pw = tmp_path / "pw"
    pw.write_text("file-secret\n")
    monkeypatch.setenv("POSTGRES_USER", "hive")
    monkeypatch.setenv("POSTGRES_PASSWORD_FILE", str(pw))
    monkeypatch.setenv("POSTGRES_DB", "hive_genie")
    monkeypatch.setenv("POSTGRES_INITDB_ARGS", "--data-checksums --lc-messages='C'")
    monkeypatch.setenv("PGDATA", "/var/lib/postgresql/data/pgdata")
    config = load("")
    pg = config.programs["postgres"].options
    assert (pg.superuser, pg.superuser_password, pg.data_dir) == ("hive", "file-secret", "/var/lib/postgresql/data/pgdata")
    assert pg.databases == (Database("hive_genie", "hive"),)
    assert (pg.ready_database, pg.ready_role, pg.scripts_database) == ("hive_genie", "hive", "hive_genie")
    assert pg.initdb_args == ("--data-checksums", "--lc-messages=C")
    assert "file-secret" in config.secrets
    # a field in the config wins over the variable; POSTGRES_PASSWORD wins over its _FILE
    monkeypatch.setenv("POSTGRES_PASSWORD", "env-secret")
    pg = program('superuser = "admin"\ndata_dir = "/d"').options
    assert (pg.superuser, pg.superuser_password, pg.data_dir) == ("admin", "env-secret", "/d")


def test_the_program_environment_table_counts_too(monkeypatch):
    pg = program("""
        [programs.postgres.environment]
        POSTGRES_USER = "svc"
        POSTGRES_PASSWORD = "svc-secret"
    """).options
    assert (pg.superuser, pg.superuser_password) == ("svc", "svc-secret")
    assert pg.databases == (Database("svc", "svc"),)  # as the image does: POSTGRES_DB defaults to the user


@pytest.mark.parametrize("body, expected", [
    ('[[programs.postgres.databases]]\nname = "d"\nowner = "x"',
     "x.toml: programs.postgres.databases[0].owner: no role named 'x' (add it to roles)"),
    ('port = 70000', "x.toml: programs.postgres.port: must be at most 65535 (got 70000)"),
    ('port = "5432"', "x.toml: programs.postgres.port: expected an integer, got a string"),
    ('data_dir = "relative/data"', "x.toml: programs.postgres.data_dir: data_dir must be an absolute path"),
    ('conf_file = "pg.conf"', "x.toml: programs.postgres.conf_file: conf_file must be an absolute path"),
    ('datadir = "/x"', "x.toml: programs.postgres.datadir: unknown field (did you mean 'data_dir'?)"),
    ('[[programs.postgres.roles]]\nname = "bad name"', "programs.postgres.roles[0].name: 'bad name' is not a valid role name"),
    ('[[programs.postgres.roles]]\nname = "pg_app"', "programs.postgres.roles[0].name: 'pg_app': role names starting with pg_ are reserved"),
    ('[[programs.postgres.roles]]\nname = "public"', "programs.postgres.roles[0].name: 'public' is reserved"),
    ('[[programs.postgres.roles]]\nname = "' + "r" * 64 + '"', "is longer than 63 bytes"),
    ('[[programs.postgres.roles]]\nname = "postgres"', "programs.postgres.roles[0].name: 'postgres' is the superuser"),
    ('[[programs.postgres.roles]]\nname = "a"\n[[programs.postgres.roles]]\nname = "a"', "roles[1].name: role 'a' is listed twice"),
    ('[[programs.postgres.roles]]\nname = "a"\npasword = "x"', "programs.postgres.roles[0].pasword: unknown field (did you mean 'password'?)"),
    ('[[programs.postgres.roles]]\nname = "a"\npassword = ""', "programs.postgres.roles[0].password: must not be empty"),
    ('roles = ["a"]', "programs.postgres.roles: expected a list of tables"),
    ('[[programs.postgres.databases]]\nname = "template1"', "databases[0].name: 'template1' is a template database"),
    ('[[programs.postgres.databases]]\nname = "d"\nextensions = ["vector;drop"]', "databases[0].extensions: 'vector;drop' is not a valid extension name"),
    ('ready_database = "nope"', "programs.postgres.ready_database: no database named 'nope' (add it to databases)"),
    ('ready_role = "nope"', "programs.postgres.ready_role: no role named 'nope' (add it to roles)"),
    ('[[programs.postgres.roles]]\nname = "r"\nlogin = false\n[[programs.postgres.databases]]\nname = "d"\nowner = "r"',
     "programs.postgres.roles: the readiness probe logs in as role 'r', which has login = false"),
    ('settings = { port = 5 }', "programs.postgres.settings.port: has a field of its own: set port instead"),
    ('settings = { "bad name" = 5 }', "programs.postgres.settings.bad name: is not a PostgreSQL setting name"),
    ('settings = { work_mem = ["4MB"] }', "programs.postgres.settings.work_mem: expected a string, number or boolean"),
    ('user = "root"', "programs.postgres.user: PostgreSQL refuses to run as root"),
    ('command = ["postgres"]', "programs.postgres.command: a kind = \"postgres\" program builds its own command"),
    ('initdb_args = ["-D/elsewhere"]', "programs.postgres.initdb_args: the data directory comes from data_dir"),
    ('initdb_args = ["--username=admin"]', "programs.postgres.initdb_args: the superuser's name comes from superuser"),
    ('initdb_args = ["-W"]', "programs.postgres.initdb_args: the superuser's password comes from superuser_password"),
    ('socket_dir = "/' + "s" * 100 + '"', "programs.postgres.socket_dir: is too long for a unix socket path"),
    ('superuser_password = "a"\nsuperuser_password_file = "/b"', "programs.postgres.superuser_password_file: give either"),
    ('startup_timeout = "0s"', "programs.postgres.startup_timeout: must be more than 0"),
])
def test_mistakes_are_one_line_naming_the_field(body, expected):
    assert expected in error(body)


def test_password_file_errors_name_the_file_not_the_secret(tmp_path):
    missing = tmp_path / "missing.pw"
    text = error(f'[[programs.postgres.roles]]\nname = "app"\npassword_file = "{missing}"')
    assert text == f"x.toml: programs.postgres.roles[0].password_file: cannot read password file {missing}: No such file or directory"
    empty = tmp_path / "empty.pw"
    empty.write_text("\n")
    assert "is empty" in error(f'superuser_password_file = "{empty}"')
    assert "must be an absolute path" in error('superuser_password_file = "pw.txt"')


def test_official_variables_that_are_wrong(monkeypatch, tmp_path):
    monkeypatch.setenv("POSTGRES_PASSWORD_FILE", str(tmp_path / "nope"))
    text = error("")
    assert text.startswith("x.toml: programs.postgres: cannot read password file") and "($POSTGRES_PASSWORD_FILE)" in text
    monkeypatch.delenv("POSTGRES_PASSWORD_FILE")
    monkeypatch.setenv("POSTGRES_USER", "pg_admin")
    assert "'pg_admin' (from $POSTGRES_USER): role names starting with pg_ are reserved" in error("")
    monkeypatch.delenv("POSTGRES_USER")
    monkeypatch.setenv("PGDATA", "data")
    assert "data_dir must be an absolute path (got 'data' (from $PGDATA))" in error("")
    monkeypatch.delenv("PGDATA")
    monkeypatch.setenv("POSTGRES_INITDB_ARGS", "--auth='unclosed")
    assert "POSTGRES_INITDB_ARGS" in error("")


def test_no_error_shows_a_password():
    secret = "Sup3r-Secret-Value"
    for body in (
        f'superuser_password = "{secret}"\n[[programs.postgres.databases]]\nname = "d"\nowner = "ghost"',
        f'[[programs.postgres.roles]]\nname = "app"\npassword = "{secret}"\nlogin = "yes"',
        f'[[programs.postgres.roles]]\nname = "bad name"\npassword = "{secret}"',
    ):
        assert secret not in error(body)
