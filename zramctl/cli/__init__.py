"""The command line: util-linux zramctl's options, columns, sizes and layout (main, getopt,
status, columns, units, output), and the verbs (verbs, stat, report, estimate).
"""
