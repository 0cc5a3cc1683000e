"""Figure functions: each takes the tidy DataFrame an experiment returned and draws it.

They never train. One module per chapter, plus :mod:`bnlib.figures.style`.
"""
