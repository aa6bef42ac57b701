"""The command line: one module per command, each its argument parsing and printing only, over the
library's functions (`ifrvis.cli` dispatches `ifrvis <command>` to them). Library modules have no
`main()`.

    ifrvis synth | check-data | eval | pretrain | train | predict | visualize | weights   (ifrvis.cli)
    python -m ifrvis.commands.train CONFIG        torchrun's entry (DDP)
    python -m ifrvis.commands.job CONFIG          one run of a sweep, as the local executor starts it
    python -m ifrvis.commands.store init [URI]    create a run store's schema once
"""
