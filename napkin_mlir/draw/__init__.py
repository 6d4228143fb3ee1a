"""Pictures of diagrams, as the paper draws them. The entry point is `render.draw`.

Modules, from the IR to the file:

* `program`: the drawing program, a pure-Python copy of the napkin IR (`extract`, `stage_of`);
* `labels`: what boxes and frames say (label lines, woven axes, partition titles);
* `style`: level and frame colours, fonts, text metrics, byte counts;
* `layout`: geometry, a layered DAG layout per block nested for group and stream frames;
* `paint`: the `Painter`, the figure and its file, the diagram picture (`render_diagram`);
* `pseudocode`: the pseudocode picture, buffers per level and step (`render_pseudocode`);
* `render`: `draw(module, path)` and the cost-model caption.
"""
