"""Plumbing every layer may use and that uses none: user errors and `run_cli` (`errors`), atomic outputs
and free-space checks (`files`), one owner per output folder (`locks`), the parser every command shares
(`flags`)."""
