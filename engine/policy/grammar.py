"""A GBNF grammar for the answer format every prompt family asks for: a reasoning trace, then a JSON list
of {"label", "bbox_2d", "point_2d"} objects (docs/protocol.md §4). With it, llama.cpp can only sample
completions that `engine.protocol.parse_answer` reads; it is off by default because the reference
implementations decode freely (a constrained model can still be wrong, just never unparseable)."""

from __future__ import annotations

ANSWER_GRAMMAR = r'''
root  ::= "<think>" think "</think>" ws "<answer>" list "</answer>"
think ::= [^<]*
list  ::= "[" ws ( obj ( ws "," ws obj )* )? ws "]"
obj   ::= "{" ws "\"label\"" ws ":" ws str ws "," ws "\"bbox_2d\"" ws ":" ws box ws "," ws "\"point_2d\"" ws ":" ws pt ws "}"
box   ::= "[" ws num ws "," ws num ws "," ws num ws "," ws num ws "]"
pt    ::= "[" ws num ws "," ws num ws "]"
num   ::= [0-9] | [1-9] [0-9] | [1-9] [0-9] [0-9] | [1-9] [0-9] [0-9] [0-9]
str   ::= "\"" [^"\\<\x00-\x1f]* "\""
ws    ::= " "?
'''.strip() + "\n"
