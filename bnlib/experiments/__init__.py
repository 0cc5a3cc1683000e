"""Experiments: one function per figure of the book, each returning a tidy DataFrame.

Experiments never plot; :mod:`bnlib.figures` draws what they return. One module per
chapter: :mod:`bnlib.experiments.algorithm` for "The BN algorithm".
"""
