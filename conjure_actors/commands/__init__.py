"""One module per subcommand; see conjure_actors.cli."""
