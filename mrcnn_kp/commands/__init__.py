"""One module per `mrcnn-kp` subcommand (see mrcnn_kp/cli.py for the contract)."""
