"""What a video costs: the price table (data, with its sources) and the quote of one request.

Why a table and not constants: prices change and differ by account, so the shipped figures
(``prices.json``, each with its source and date) can be overridden by a JSON file of the same
shape (``WAN_MCP_PRICES_FILE``) without a release. Money is counted in integer micro-dollars
(USD 1 = 1,000,000) so that budgets add up exactly: "stops exactly at the budget" must not
depend on how 0.1 + 0.2 rounds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from typing import Any, Final

from wan_mcp.errors import ErrorCode, WanError

__all__ = ["MICRO", "PriceTable", "Quote", "format_usd"]

#: Micro-dollars per dollar.
MICRO: Final = 1_000_000
#: No real price is near this; a larger figure in an override file is a typo (cents vs dollars).
_MAX_USD_PER_SECOND: Final = Decimal(100)
_AUDIO_KEYS: Final = ("audio", "silent")
_ENV: Final = "WAN_MCP_PRICES_FILE"


def format_usd(micro: int) -> str:
    """``USD 0.75``: cents always, a third decimal only when the amount has one (flash prices)."""
    usd = Decimal(micro) / MICRO
    text = f"{usd:.3f}" if (usd * 100) % 1 else f"{usd:.2f}"
    return f"USD {text}"


@dataclass(frozen=True)
class Quote:
    """The estimated cost of one ``generate_video`` call, as shown to the agent and the user."""

    micro_usd: int
    credits: int
    seconds: int
    usd_per_second_micro: int
    model: str
    resolution: str
    audio: bool

    @property
    def usd(self) -> float:
        return self.micro_usd / MICRO

    @property
    def basis(self) -> str:
        """How the amount was reached, e.g. ``5 s x USD 0.15/s (wan2.6, 1080p, with audio)``."""
        per_second = format_usd(self.usd_per_second_micro).removeprefix("USD ")
        sound = "with audio" if self.audio else "silent"
        return f"{self.seconds} s x USD {per_second}/s ({self.model}, {self.resolution}, {sound})"

    def as_dict(self) -> dict[str, Any]:
        return {
            "usd": round(self.usd, 6),
            "credits": self.credits,
            "estimate": True,
            "basis": self.basis,
        }


def _usd(value: object, where: str, source: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _bad(source, f"{where} must be a number of USD per second, got {type(value).__name__}")
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise _bad(source, f"{where} is not a number ({str(value)[:40]!r})") from None
    if not amount.is_finite() or amount <= 0 or amount > _MAX_USD_PER_SECOND:
        raise _bad(source, f"{where} must be more than 0 and at most {_MAX_USD_PER_SECOND} USD per second")
    return amount


def _bad(source: str, why: str) -> WanError:
    return WanError(
        ErrorCode.CONFIG,
        f"the price table {source} is not usable: {why}",
        hint=f"fix the file (same shape as wan_mcp/core/spending/prices.json) or unset {_ENV}",
    )


class PriceTable:
    """USD per second of output by model x resolution x audio, plus the credits rate."""

    def __init__(self, per_second: Mapping[tuple[str, str, bool], int], *, credits_per_usd: int, as_of: str) -> None:
        self._per_second = dict(per_second)
        self.credits_per_usd = credits_per_usd
        self.as_of = as_of

    @classmethod
    def load(cls, override: Path | None = None) -> PriceTable:
        """The shipped table, with the entries of ``override`` (same JSON shape) replacing its own."""
        shipped = json.loads(resources.files(__package__).joinpath("prices.json").read_text(encoding="utf-8"))
        table: dict[tuple[str, str, bool], Decimal] = {}
        cls._fold(table, shipped, "prices.json (shipped)")
        credits_per_usd = int(shipped["credits_per_usd"])
        as_of = str(shipped["as_of"])
        if override is not None:
            source = str(override)
            try:
                data = json.loads(Path(override).expanduser().read_text(encoding="utf-8"))
            except OSError as exc:
                raise _bad(source, f"it cannot be read ({exc.strerror or exc})") from None
            except ValueError as exc:
                raise _bad(source, f"it is not JSON ({exc})") from None
            if not isinstance(data, dict):
                raise _bad(source, "the top level must be a JSON object")
            cls._fold(table, data, source)
            if "credits_per_usd" in data:
                credits = data["credits_per_usd"]
                if isinstance(credits, bool) or not isinstance(credits, int) or not 1 <= credits <= 1_000_000:
                    raise _bad(source, "credits_per_usd must be a whole number between 1 and 1000000")
                credits_per_usd = credits
            as_of = str(data.get("as_of", f"{as_of} + {override.name}"))
        micro = {key: int((value * MICRO).to_integral_value(ROUND_CEILING)) for key, value in table.items()}
        return cls(micro, credits_per_usd=credits_per_usd, as_of=as_of)

    @staticmethod
    def _fold(table: dict[tuple[str, str, bool], Decimal], data: Mapping[str, Any], source: str) -> None:
        models = data.get("usd_per_second")
        if not isinstance(models, dict):
            raise _bad(source, "it has no 'usd_per_second' object")
        for model, by_resolution in models.items():
            if not isinstance(by_resolution, dict):
                raise _bad(source, f"usd_per_second.{model} must map resolutions to prices")
            for resolution, by_audio in by_resolution.items():
                if not isinstance(by_audio, dict) or not set(by_audio) <= set(_AUDIO_KEYS) or not by_audio:
                    raise _bad(source, f"usd_per_second.{model}.{resolution} must have 'audio' and/or 'silent'")
                for sound, value in by_audio.items():
                    where = f"usd_per_second.{model}.{resolution}.{sound}"
                    table[(str(model), str(resolution), sound == "audio")] = _usd(value, where, source)

    def per_second_micro(self, model: str, resolution: str, audio: bool) -> int:
        """The price of one second; a combination the table lacks costs its dearest second.

        Never under-estimate: an unknown combination (a model added upstream before the table
        knows it) is quoted at the highest price of its model, or of the whole table.
        """
        exact = self._per_second.get((model, resolution, audio))
        if exact is not None:
            return exact
        same_model = [v for (m, _, _), v in self._per_second.items() if m == model]
        return max(same_model or self._per_second.values())

    def quote(self, *, model: str, resolution: str, audio: bool, seconds: int) -> Quote:
        per_second = self.per_second_micro(model, resolution, audio)
        micro = per_second * seconds
        return Quote(
            micro_usd=micro,
            credits=math.ceil(micro * self.credits_per_usd / MICRO),
            seconds=seconds,
            usd_per_second_micro=per_second,
            model=model,
            resolution=resolution,
            audio=audio,
        )

    def lines(self) -> list[str]:
        """The table in short, one line per model x resolution (for ``get_usage``)."""
        out = []
        for model, resolution in sorted({(m, r) for m, r, _ in self._per_second}):
            with_audio = self._per_second.get((model, resolution, True))
            silent = self._per_second.get((model, resolution, False))
            text = f"{model} {resolution}: "
            if with_audio == silent and with_audio is not None:
                text += f"{format_usd(with_audio)}/s"
            else:
                parts = []
                if with_audio is not None:
                    parts.append(f"{format_usd(with_audio)}/s with audio")
                if silent is not None:
                    parts.append(f"{format_usd(silent)}/s silent")
                text += ", ".join(parts)
            out.append(text)
        return out
