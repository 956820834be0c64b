"""The `star` subcommands that run the reasoner (segment, eval, bench pipeline)."""
