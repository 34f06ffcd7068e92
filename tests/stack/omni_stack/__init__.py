"""The SAM stack of template.yaml, brought up on this machine against moto (see README,
"Deploy to AWS", the stack test)."""
