"""Settings, resolved in one place: defaults < JSON config file < env (WAN_MCP_*) < CLI flags.

Hosts (Claude Desktop, Cursor...) start servers with ``cwd=/`` and a scrubbed
environment, so nothing here defaults to the working directory: data and outputs
live in the per-user data dir from platformdirs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    JsonConfigSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from wan_mcp.errors import ErrorCode, WanError, register_secret

DEFAULT_BASE_URL = "https://toapis.com"
ENV_PREFIX = "WAN_MCP_"


def default_data_dir() -> Path:
    from platformdirs import user_data_path  # only when no data dir is configured

    return user_data_path("wan-mcp", appauthor=False)


def default_inbox_dir() -> Path:
    """<the user's Pictures folder>/wan-mcp (platformdirs knows each platform's)."""
    from platformdirs import user_pictures_path

    return user_pictures_path() / "wan-mcp"


#: Folders whose whole content is never a sensible read root (plus any home and its parents).
_SYSTEM_FOLDERS = frozenset(
    Path(p)
    for p in (
        "/", "/etc", "/usr", "/bin", "/sbin", "/lib", "/lib64", "/var", "/opt", "/boot", "/srv", "/root",
        "/home", "/Users", "/System", "/Library", "/Applications", "/private", "/Volumes", "/mnt", "/media",
    )
)  # fmt: skip


def broad_folder(folder: Path) -> str | None:
    """Why ``folder`` would expose too much as a read root, or None when it is specific enough."""
    real = Path(os.path.realpath(folder.expanduser()))
    home = Path(os.path.realpath(Path.home()))
    if real == Path(real.anchor):
        return "the root of a file system"
    if real in _SYSTEM_FOLDERS or (os.name == "nt" and real.parent == Path(real.anchor)):
        return "a system folder"
    if real == home or real in home.parents:
        return "a whole home folder (with every document, key and photo in it)"
    return None


def _split_paths(value: Any) -> Any:
    """Folders from env are ``os.pathsep``-separated (like PATH); JSON gives lists."""
    if isinstance(value, str):
        return [part for part in (p.strip() for p in value.split(os.pathsep)) if part]
    return value


def _split_commas(value: Any) -> Any:
    """Hosts, CIDRs and tokens from env are comma-separated (IPv6 has colons)."""
    if isinstance(value, str):
        return [part for part in (p.strip() for p in value.split(",")) if part]
    return value


class Settings(BaseSettings):
    """Every knob of the server. ``config.example.json`` lists them with their defaults."""

    #: False for settings given whole by a program (:func:`settings_from_values`): no env, no file.
    reads_environment: ClassVar[bool] = True

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="ignore",
        validate_default=True,
        enable_decoding=False,  # lists from env are split by _split_paths / _split_commas, not parsed as JSON
        # WAN_MCP_X= is unset: hosts fill an optional setting the user left blank with "" (MCPB user_config)
        env_ignore_empty=True,
    )

    # --- upstream ---------------------------------------------------------------
    api_key: SecretStr | None = Field(default=None, description="ToAPIs key (sk-...).")
    base_url: str = Field(default=DEFAULT_BASE_URL, description="Gateway base URL (toapis.cn in China).")

    # --- where things live --------------------------------------------------------
    data_dir: Path = Field(default_factory=default_data_dir, description="Journal (SQLite) location.")
    database_url: SecretStr | None = Field(
        default=None,
        description="postgresql://user:password@host:port/db: the journal in PostgreSQL, shared by replicas "
        "(needs wan-mcp[postgres]); unset: SQLite in the data dir.",
    )
    output_dir: Path | None = Field(default=None, description="Downloads; default <data_dir>/videos.")
    allowed_dirs: list[Path] | None = Field(
        default=None,
        description="Folders local files may be read from, instead of the inbox (the output dir always is).",
    )
    inbox_dir: Path | None = Field(
        default=None,
        description="The one folder local images are read from by default; created on first run. "
        "Default: <your Pictures folder>/wan-mcp.",
    )
    allow_broad_dirs: bool = Field(
        default=False,
        description="Let WAN_MCP_ALLOWED_DIRS name /, a system folder or a whole home folder.",
    )
    allow_remote_paths: bool = Field(
        default=False,
        description="Let HTTP/SSE clients name files on this machine (default: data: and http(s) URLs only).",
    )
    keep_image_metadata: bool = Field(
        default=False, description="Upload images with their EXIF/XMP/GPS metadata (default: removed first)."
    )

    # --- waits and polling --------------------------------------------------------
    max_wait_seconds: float = Field(default=45.0, ge=0, le=3600, description="Cap on any tool's wait.")
    poll_first_seconds: float = Field(default=5.0, gt=0, description="First status poll after submit.")
    poll_interval_seconds: float = Field(default=10.0, gt=0, description="Later polls (plus jitter).")
    poll_max_interval_seconds: float = Field(default=120.0, gt=0, description="Back-off ceiling.")
    upstream_rate_budget: float = Field(
        default=10.0, gt=0, description="Max status GETs per second (all replicas together on one PostgreSQL journal)."
    )

    # --- HTTP client ----------------------------------------------------------------
    connect_timeout: float = Field(default=10.0, gt=0, description="Seconds to open a connection upstream.")
    read_timeout: float = Field(default=60.0, gt=0, description="Seconds without a byte from upstream.")
    write_timeout: float = Field(default=60.0, gt=0, description="Seconds to send a request body upstream.")
    pool_timeout: float = Field(default=10.0, gt=0, description="Seconds to wait for a free connection.")
    request_deadline_seconds: float = Field(
        default=120.0, gt=0, le=3600, description="Cap on one whole exchange with the gateway (slow drips end)."
    )
    retry_attempts: int = Field(default=4, ge=1, le=10, description="Attempts for reads and uploads.")
    retry_total_seconds: float = Field(default=30.0, gt=0, description="Time budget for those attempts.")

    # --- files --------------------------------------------------------------------
    max_download_bytes: int = Field(default=1024**3, gt=0, description="Result video size cap.")
    max_image_bytes: int = Field(default=10 * 1024**2, gt=0, description="Local image read cap (pre-fix).")
    max_video_upload_bytes: int = Field(default=50 * 1024**2, gt=0, description="Reference video cap.")
    allow_private_urls: list[str] = Field(
        default_factory=list,
        description="Hosts/CIDRs the server may fetch from although private (e.g. 127.0.0.1 for the simulator).",
    )
    poster_frames: bool = Field(default=True, description="Attach a small poster frame (needs PyAV).")

    # --- HTTP transports -------------------------------------------------------------
    http_token: list[SecretStr] = Field(
        default_factory=list, description="Bearer token(s) required by the HTTP/SSE transports."
    )
    allowed_hosts: list[str] = Field(default_factory=list, description="Extra Host header values allowed.")
    allowed_origins: list[str] = Field(default_factory=list, description="Origin header values allowed.")
    http_header_timeout_seconds: float = Field(
        default=10.0, gt=0, le=300, description="A client must send its request headers within this (HTTP/SSE)."
    )
    max_request_body_bytes: int = Field(default=16 * 1024**2, gt=0, description="HTTP body cap (413).")

    # --- many users (HTTP/SSE) ---------------------------------------------------------------
    tenants_file: Path | None = Field(
        default=None,
        description="JSON file of tenants (token digests, budgets, rate, own key env); `wan-mcp tenant add` writes it.",
    )
    tenant_rate_per_minute: float = Field(
        default=120.0, ge=0, description="Tool calls per minute per HTTP/SSE tenant without its own; 0 = unlimited."
    )
    byok_header: bool = Field(
        default=True, description="Accept a tenant's own gateway key in the X-Wan-Api-Key request header."
    )
    download_link_seconds: float = Field(
        default=3600.0,
        ge=60.0,
        le=7 * 86400.0,
        description="How long a signed download link (how remote tenants get their finished videos over "
        "HTTP/SSE) stays valid; get_task_status hands out a fresh one.",
    )
    public_url: str | None = Field(
        default=None,
        description="This server's public MCP URL (e.g. https://wan.example.com/mcp): the OAuth token audience "
        "and the resource in its Protected Resource Metadata.",
    )
    oauth_issuer: str | None = Field(
        default=None, description="OAuth 2.1 resource-server mode: the authorization server's issuer URL."
    )
    oauth_jwks_url: str | None = Field(
        default=None, description="Its JWKS URL; default: from the issuer's metadata (RFC 8414 / OIDC discovery)."
    )
    oauth_scope: str = Field(default="wan", description="The scope an access token must carry.")
    oauth_principal_claim: str = Field(default="sub", description="The token claim that names the principal.")

    # --- spending -----------------------------------------------------------------------
    budget_daily_usd: float = Field(
        default=25.0, ge=0, description="Most estimated USD spent per day (server's local day); 0 = unlimited."
    )
    budget_session_usd: float | None = Field(
        default=None, ge=0, description="Most estimated USD spent by this server process; unset/0 = unlimited."
    )
    confirm_above_usd: float = Field(
        default=2.0, ge=0, description="A call quoted above this asks the user first (elicitation or confirm_token)."
    )
    read_only: bool = Field(default=False, description="Refuse every paid or uploading call (quotes, dry runs work).")
    prices_file: Path | None = Field(
        default=None, description="JSON price table overriding the shipped estimates (same shape as prices.json)."
    )

    # --- the embedded default -------------------------------------------------------
    simulate: bool = Field(default=False, description="Run against an in-process gateway simulator.")
    simulator_job_seconds: float = Field(default=4.0, ge=0, description="How long a simulated job takes.")
    simulator_balance_usd: float = Field(
        default=100.0, ge=0, description="The simulated account's balance (spent per completed second; 402 at 0)."
    )

    _paths = field_validator("allowed_dirs", mode="before")(_split_paths)
    _commas = field_validator("allow_private_urls", "allowed_hosts", "allowed_origins", "http_token", mode="before")(
        _split_commas
    )

    @field_validator("base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("data_dir", "output_dir", "inbox_dir", "prices_file", "tenants_file", mode="after")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None

    @model_validator(mode="after")
    def _no_broad_read_roots(self) -> Settings:
        """A read root that exposes the whole machine or a whole home must be asked for explicitly.

        An injected agent can upload any readable file and get a public URL back, so "/" (also
        what ``~`` becomes when HOME=/), a system folder or a home folder is refused unless
        ``allow_broad_dirs`` says the user means it.
        """
        if self.allowed_dirs is None or self.allow_broad_dirs:
            return self
        for folder in self.allowed_dirs:
            why = broad_folder(folder)
            if why:
                raise WanError(
                    ErrorCode.CONFIG,
                    f"{ENV_PREFIX}ALLOWED_DIRS names {folder}, {why}: an agent could upload any file in it",
                    hint=f"name the folders that hold the pictures to animate (e.g. {default_inbox_dir()}), "
                    f"or set {ENV_PREFIX}ALLOW_BROAD_DIRS=1 if you really mean it",
                )
        return self

    @model_validator(mode="after")
    def _register_secrets(self) -> Settings:
        if self.api_key is not None:
            register_secret(self.api_key.get_secret_value())
        for token in self.http_token:
            register_secret(token.get_secret_value())
        if self.database_url is not None:  # the whole URL and the password in it
            from urllib.parse import unquote, urlsplit

            url = self.database_url.get_secret_value()
            register_secret(url)
            register_secret(unquote(urlsplit(url).password or ""))
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        if not cls.reads_environment:
            return (init_settings,)
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_path = os.environ.get(ENV_PREFIX + "CONFIG")
        if config_path:
            path = Path(config_path).expanduser()
            if not path.is_file():
                raise WanError(
                    ErrorCode.CONFIG,
                    f"config file {path} (from {ENV_PREFIX}CONFIG) does not exist",
                    hint=f"create it (see config.example.json) or unset {ENV_PREFIX}CONFIG",
                )
            sources.append(JsonConfigSettingsSource(settings_cls, json_file=path))
        return tuple(sources)

    # --- derived ------------------------------------------------------------------------
    @property
    def resolved_output_dir(self) -> Path:
        return self.output_dir if self.output_dir is not None else self.data_dir / "videos"

    @property
    def resolved_tenants_file(self) -> Path:
        """Where tenants are read from and ``wan-mcp tenant add`` writes: default <data_dir>/tenants.json."""
        return self.tenants_file if self.tenants_file is not None else self.data_dir / "tenants.json"

    @property
    def journal_path(self) -> Path:
        return self.data_dir / "journal.sqlite3"

    @property
    def resolved_inbox_dir(self) -> Path:
        return self.inbox_dir if self.inbox_dir is not None else default_inbox_dir()

    @property
    def read_roots(self) -> list[Path]:
        """Where local files may be read from (realpath'd by the file boundary).

        By default only the inbox and our own output folder: nothing leaves the machine that
        the user did not put out to be sent.
        """
        if self.allowed_dirs is not None:
            return [p.expanduser() for p in self.allowed_dirs] + [self.resolved_output_dir]
        return [self.resolved_inbox_dir, self.resolved_output_dir]

    @property
    def restrict_dotdirs(self) -> bool:
        """The default roots exclude dot-folders; explicit roots are taken as given."""
        return self.allowed_dirs is None


def load_settings(**overrides: Any) -> Settings:
    """Build settings; ``overrides`` are CLI flags (highest precedence). None values are ignored."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


class _ValuesOnly(Settings):
    reads_environment: ClassVar[bool] = False


def settings_from_values(**values: Any) -> Settings:
    """Settings from ``values`` and the defaults alone: blind to ``WAN_MCP_*`` and to the config file.

    For a server run inside another program (the demo): the user's own key, budgets or tenants
    in the environment must not leak into it, as a subprocess given a scrubbed environment would not.
    """
    return _ValuesOnly(**values)
