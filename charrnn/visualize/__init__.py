"""See inside a model: per-character surprise, top-5 predictions and cell activations over a text.

`trace` steps a model through a text; `features` computes simple source-code features of the text (strings,
comments, bracket depth, column); `cells` ranks cells by correlation with them (Karpathy, Johnson & Fei-Fei
2015, "Visualizing and Understanding Recurrent Networks"); `page` renders one self-contained HTML page; `chart`
draws a run's loss history as SVG.
"""
