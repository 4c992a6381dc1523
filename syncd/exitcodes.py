"""The contract's exit codes (CONTRACT.md), in a module of their own: the CLI's light
commands (`status`, `sync`, `pause`, …) name them without loading the engine."""

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_ATTENTION = 0, 1, 2, 3, 4
