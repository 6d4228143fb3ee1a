"""Painting: laid-out blocks onto matplotlib axes, the figure and its file.

`Painter` draws wires (coloured by level, labelled where they leave a column), boxes (one
shape per kind, the woven-axes band across the top), transfers (two-coloured arrows) and the
group and stream frames with their compartments, links and carry loop. `render_diagram`
assembles the diagram picture: title, the function's layout, the legend, the caption.
`figure` and `save` are shared with the pseudocode picture.
"""

from __future__ import annotations

import io
from pathlib import Path

from matplotlib import patches, rc_context
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.path import Path as MPath
from PIL import Image

from napkin_mlir.draw.labels import box_lines, woven_axes
from napkin_mlir.draw.layout import (
    BAND_H,
    CARRY,
    COMPARTMENT_TITLE,
    DUMMY_PORT,
    FPAD,
    FRAME_TITLE,
    BlockLayout,
    Container,
    Edge,
    Layout,
    LNode,
)
from napkin_mlir.draw.program import Box, Program
from napkin_mlir.draw.style import (
    BAND_COLOUR,
    FONT,
    FS,
    FS_SMALL,
    FS_TITLE,
    GROUP_COLOUR,
    LEVEL_COLOURS,
    LEVEL_NAMES,
    LEVEL_ORDER,
    STREAM_COLOUR,
    text_width,
    tint,
)
from napkin_mlir.errors import NapkinError, UsageError

#: Output formats by file extension.
FORMATS = ("png", "svg")
DPI = 110
MARGIN = 14.0  # around the picture
TITLE_H = 26.0  # the picture's title row

#: Fill of a box by kind (white for the others).
FACES = {
    "contract": "#f5eef8",
    "unary": "#fef9e7",
    "binary": "#fef9e7",
    "cast": "#f4f6f6",
    "reduce": "#e8f8f5",
    "softmax": "#fdedec",
    "mask": "#f2f3f4",
    "map": "#eafaf1",
    "fill": "#ffffff",
}
#: matplotlib box styles of the rounded kinds (`round,...rounding_size=5` for the others).
BOX_STYLES = {
    "mask": "sawtooth,pad=0,tooth_size=3",
    "map": "roundtooth,pad=0,tooth_size=3",
    "fill": "round,pad=0,rounding_size=3",
}
CAPTIONS = {"init": "init (head)", "step": "step: each chunk (accumulator update)", "finish": "finish"}
BOX_LW = 1.4
WIRE_LW = 1.6
PORT_R = 2.2


class Painter:
    """Paints onto one axes (y grows downwards, units are points); records the levels seen."""

    def __init__(self, ax: Axes, program: Program) -> None:
        self.ax = ax
        self.p = program
        self.levels_seen: set[str | None] = set()

    def colour(self, wire: int) -> str:
        level = self.p.wires[wire].level
        self.levels_seen.add(level)
        return LEVEL_COLOURS.get(level, LEVEL_COLOURS[None])

    def text(
        self,
        x: float,
        y: float,
        s: str,
        size: float = FS,
        colour: object = "black",
        ha: str = "center",
        va: str = "center",
        bold: bool = False,
        italic: bool = False,
        z: float = 5,
    ) -> None:
        self.ax.text(
            x,
            y,
            s,
            fontsize=size,
            color=colour,
            ha=ha,
            va=va,
            family=FONT,
            fontweight="bold" if bold else "normal",
            fontstyle="italic" if italic else "normal",
            zorder=z,
        )

    def wire_label(self, x: float, y: float, wire: int) -> None:
        self.text(x + 3, y - 2.5, self.p.wires[wire].label(), FS_SMALL, self.colour(wire), ha="left", va="bottom", z=6)

    # -- blocks and wires --------------------------------------------------------------

    def block(self, lay: BlockLayout, ox: float, oy: float, names: bool = False) -> None:
        """A laid-out block at (ox, oy): wires first (each output labelled once), then nodes;
        `names`: the function's argument names and `result` beside its ports."""
        labelled: set[tuple[int, int]] = set()
        for e in lay.edges:
            key = (id(e.src), e.sport)
            self.edge(lay, e, ox, oy, label=key not in labelled)
            labelled.add(key)
        for n in lay.nodes:
            if n.role == "box":
                self.node(n, ox, oy)
            elif n.role == "arg":
                self.arg_port(n, ox, oy, names)
            elif n.role == "yield":
                self.result_ports(lay, n, ox, oy, names)

    def arg_port(self, n: LNode, ox: float, oy: float, names: bool) -> None:
        y = oy + n.y + n.outs[0]
        x = ox + n.x
        c = self.colour(n.wire)
        self.ax.add_patch(patches.Circle((x, y), PORT_R, color=c, zorder=4))
        if names and self.p.wires[n.wire].name:
            self.text(x - 5, y, self.p.wires[n.wire].name, FS, c, ha="right", bold=True)

    def result_ports(self, lay: BlockLayout, n: LNode, ox: float, oy: float, names: bool) -> None:
        for k, py in enumerate(n.ins):
            y = oy + n.y + py
            x = ox + n.x
            c = self.colour(lay.block.results[k]) if k < len(lay.block.results) else "black"
            self.ax.add_patch(patches.Circle((x, y), PORT_R, color=c, zorder=4))
            if names:
                self.text(x + 5, y, "result", FS, c, ha="left", bold=True)

    def edge(self, lay: BlockLayout, e: Edge, ox: float, oy: float, label: bool = True) -> None:
        """A wire: straight to the end of its column (labelled there), then through each gap,
        bending as a cubic curve after the label where the height changes."""
        pts: list[tuple[float, float]] = []
        codes: list[int] = []
        sx = ox + e.src.x + e.src.w
        sy = oy + e.src.out_y(e.sport)
        pts.append((sx, sy))
        codes.append(MPath.MOVETO)
        col = e.src.col
        x_col_end = ox + lay.col_x[col] + lay.col_w[col]
        if x_col_end > sx:
            pts.append((x_col_end, sy))
            codes.append(MPath.LINETO)
        if label:
            self.wire_label(x_col_end, sy, e.wire)
        cur = (x_col_end, sy)
        for k, n in enumerate([*e.dummies, e.dst]):
            ny = oy + (n.y + DUMMY_PORT if n.role == "dummy" else n.in_y(e.dport))
            nx = ox + lay.col_x[n.col]
            gap_start = ox + lay.col_x[n.col - 1] + lay.col_w[n.col - 1]
            bend_start = gap_start + (lay.gap_label[n.col - 1] if k == 0 else 0.0)
            bend_start = min(bend_start, nx - 6)
            if abs(ny - cur[1]) < 0.5:
                pts.append((nx, ny))
                codes.append(MPath.LINETO)
            else:
                pts.append((bend_start, cur[1]))
                codes.append(MPath.LINETO)
                mid = (bend_start + nx) / 2
                pts += [(mid, cur[1]), (mid, ny), (nx, ny)]
                codes += [MPath.CURVE4] * 3
            if n.role == "dummy":
                pts.append((nx + lay.col_w[n.col], ny))
                codes.append(MPath.LINETO)
                cur = (nx + lay.col_w[n.col], ny)
            else:
                tx = ox + n.x
                if tx > nx:
                    pts.append((tx, ny))
                    codes.append(MPath.LINETO)
        c = self.colour(e.wire)
        self.ax.add_patch(patches.PathPatch(MPath(pts, codes), fill=False, edgecolor=c, lw=WIRE_LW, zorder=2))

    # -- boxes -------------------------------------------------------------------------

    def node(self, n: LNode, ox: float, oy: float) -> None:
        """A box (or, for a group or stream, its frame and contents) at (ox, oy) + its place."""
        x, y, w, h = ox + n.x, oy + n.y, n.w, n.h
        if n.inner is not None:
            self.container(n, x, y)
            return
        box = n.box
        out_c = self.colour(box.outputs[0]) if box.outputs else LEVEL_COLOURS[None]
        lines = box_lines(box, self.p)
        if box.kind == "transfer":
            self.transfer(box, x, y, w, h, out_c, lines)
            return
        self.shape(box.kind, x, y, w, h, out_c)
        woven = woven_axes(box, self.p)
        band = BAND_H if woven else 0.0
        if woven:
            self.ax.plot(
                [x - 5, x + w + 5], [y + band, y + band], color=BAND_COLOUR, lw=0.8, zorder=4, solid_capstyle="butt"
            )
            self.text(x + w / 2, y + band / 2 + 0.5, " ".join(woven), FS_SMALL, BAND_COLOUR, italic=True)
        body_h = h - band
        nl = len(lines)
        for i, s in enumerate(lines):
            cy = y + band + body_h * (i + 0.5) / nl
            self.text(x + w / 2, cy, s, FS, "black", bold=(i == 0 and nl > 1) or box.kind == "binary")

    def transfer(self, box: Box, x: float, y: float, w: float, h: float, out_c: str, lines: list[str]) -> None:
        """An arrow box, its tail in the source level's tint and its head in the destination's."""
        ax = self.ax
        src_c = self.colour(box.inputs[0]) if box.inputs else LEVEL_COLOURS[None]
        tip = min(8.0, h / 3)
        left = [(x, y), (x + w / 2, y), (x + w / 2, y + h), (x, y + h)]
        right = [(x + w / 2, y), (x + w - tip, y), (x + w, y + h / 2), (x + w - tip, y + h), (x + w / 2, y + h)]
        ax.add_patch(patches.Polygon(left, closed=True, facecolor=tint(src_c), edgecolor="none", zorder=3))
        ax.add_patch(patches.Polygon(right, closed=True, facecolor=tint(out_c), edgecolor="none", zorder=3))
        outline = [(x, y), (x + w - tip, y), (x + w, y + h / 2), (x + w - tip, y + h), (x, y + h)]
        ax.add_patch(patches.Polygon(outline, closed=True, fill=False, edgecolor="#333333", lw=1.0, zorder=4))
        self.text(x + w / 2 - 2, y + h / 2 - 5, lines[0], FS, "black", bold=True)
        self.text(x + w / 2 - 2, y + h / 2 + 6, lines[1], FS_SMALL, "#333333")

    def shape(self, kind: str, x: float, y: float, w: float, h: float, edge: str) -> None:
        """The outline of a box by kind: trapezoid (reduce), double frame (softmax), square
        (contract, other), stadium (binary), saw or round teeth (mask, map), rounded box."""
        ax = self.ax
        face = FACES.get(kind, "#ffffff")
        if kind == "reduce":
            inset = min(8.0, h / 4)
            poly = [(x, y), (x + w, y + inset), (x + w, y + h - inset), (x, y + h)]
            ax.add_patch(patches.Polygon(poly, closed=True, facecolor=face, edgecolor=edge, lw=BOX_LW, zorder=3))
        elif kind == "softmax":
            ax.add_patch(patches.Rectangle((x, y), w, h, facecolor=face, edgecolor=edge, lw=BOX_LW, zorder=3))
            ax.add_patch(
                patches.Rectangle((x + 2.5, y + 2.5), w - 5, h - 5, fill=False, edgecolor=edge, lw=0.8, zorder=3)
            )
        elif kind == "contract" or kind == "other":
            ax.add_patch(patches.Rectangle((x, y), w, h, facecolor=face, edgecolor=edge, lw=BOX_LW + 0.4, zorder=3))
        else:
            if kind == "binary":
                style = f"round,pad=0,rounding_size={min(h, w) / 3:.1f}"
            else:
                style = BOX_STYLES.get(kind, "round,pad=0,rounding_size=5")
            ax.add_patch(
                patches.FancyBboxPatch(
                    (x, y),
                    w,
                    h,
                    boxstyle=style,
                    facecolor=face,
                    edgecolor=edge,
                    lw=BOX_LW,
                    ls="--" if kind in ("fill", "cast") else "-",
                    zorder=3,
                )
            )

    # -- group and stream frames -------------------------------------------------------

    def container(self, n: LNode, x: float, y: float) -> None:
        """A partition frame at (x, y): frame and title, a stream's compartments and carry
        loop, the links inside, the ports, then the blocks inside."""
        inner = n.inner
        group = inner.kind == "group"
        colour = GROUP_COLOUR if group else STREAM_COLOUR
        self.ax.add_patch(
            patches.FancyBboxPatch(
                (x, y),
                n.w,
                n.h,
                boxstyle="round,pad=0,rounding_size=6",
                facecolor="#fbf7fd" if group else "#fef9f0",
                edgecolor=colour,
                lw=1.8 if group else 2.2,
                ls=(0, (5, 3)) if group else "solid",
                zorder=1,
            )
        )
        self.text(x + FPAD, y + FRAME_TITLE / 2 + 1, inner.title, FS, colour, ha="left", bold=True)
        if not group:
            self.compartments(inner, x, y)
            if inner.carry:
                self.carry_loop(inner.carry, x, y)
        self.links(inner, x, y)
        for wire_y in n.ins:
            self.ax.add_patch(patches.Rectangle((x - 2, y + wire_y - 3), 4, 6, color="#333333", zorder=4))
        for wire_y in n.outs:
            self.ax.add_patch(patches.Rectangle((x + n.w - 2, y + wire_y - 3), 4, 6, color="#333333", zorder=4))
        for _, lay, px, py in inner.parts:
            self.block(lay, x + px, y + py)

    def compartments(self, inner: Container, x: float, y: float) -> None:
        """The dotted init, step and finish compartments of a stream, each captioned."""
        for role, lay, px, py in inner.parts:
            rx, ry = x + px - FPAD / 2, y + py - COMPARTMENT_TITLE
            rw, rh = lay.w + FPAD, lay.h + COMPARTMENT_TITLE + FPAD / 2
            self.ax.add_patch(
                patches.Rectangle(
                    (rx, ry), rw, rh, facecolor="white", edgecolor=STREAM_COLOUR, lw=0.8, ls=":", zorder=1.5
                )
            )
            self.text(
                rx + 3, ry + COMPARTMENT_TITLE / 2, CAPTIONS[role], FS_SMALL, STREAM_COLOUR, ha="left", italic=True
            )

    def carry_loop(self, carry: tuple[float, float, float], x: float, y: float) -> None:
        """The arrow under a stream's step, from its right side back to its left."""
        xl, xr, yc = carry
        xl, xr, yc = x + xl, x + xr, y + yc
        y0 = yc - CARRY / 2
        loop = MPath([(xr, y0), (xr, yc), (xl, yc), (xl, y0)], [MPath.MOVETO, MPath.LINETO, MPath.LINETO, MPath.LINETO])
        self.ax.add_patch(
            patches.FancyArrowPatch(
                path=loop, arrowstyle="-|>", mutation_scale=10, color=STREAM_COLOUR, lw=1.3, zorder=2
            )
        )
        self.text((xl + xr) / 2, yc - 5, "carried state → next step", FS_SMALL, STREAM_COLOUR, italic=True)

    def links(self, inner: Container, x: float, y: float) -> None:
        """The wires inside a frame, between its edge and its blocks; long ones labelled."""
        for wire, x0, y0, x1, y1 in inner.links:
            c = self.colour(wire)
            if abs(y1 - y0) < 0.5:
                self.ax.plot([x + x0, x + x1], [y + y0, y + y1], color=c, lw=WIRE_LW, zorder=2)
            else:
                mid = (x0 + x1) / 2
                path = MPath(
                    [(x + x0, y + y0), (x + mid, y + y0), (x + mid, y + y1), (x + x1, y + y1)],
                    [MPath.MOVETO, MPath.CURVE4, MPath.CURVE4, MPath.CURVE4],
                )
                self.ax.add_patch(patches.PathPatch(path, fill=False, edgecolor=c, lw=WIRE_LW, zorder=2))
            if x0 > 0 and x1 - x0 > 40:
                self.wire_label(x + x0, y + y0, wire)


# --------------------------------------------------------------------------------------
# Figure, legend, file


def figure(width: float, height: float) -> tuple[Figure, Axes]:
    """A figure of `width` x `height` points with one axes in points, y growing downwards."""
    fig = Figure(figsize=(width / 72, height / 72))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.axis("off")
    return fig, ax


def save(fig: Figure, path: Path) -> None:
    """Writes `fig` as .svg (text kept as text, no date) or .png (a 256-colour palette)."""
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise UsageError(f"output '{path}': unsupported extension (expected .png or .svg)")
    try:
        if fmt == "svg":
            with rc_context({"svg.fonttype": "none", "svg.hashsalt": "napkin"}):
                fig.savefig(path, format="svg", metadata={"Date": None})
        else:
            # an adaptive 256-colour palette keeps the PNGs small (they are mostly white)
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=DPI, facecolor="white")
            buf.seek(0)
            with Image.open(buf) as im:
                im.convert("RGB").quantize(colors=256).save(path, format="PNG", optimize=True)
    except OSError as err:
        raise NapkinError(f"cannot write '{path}': {err.strerror or err}") from None


def paint_title(painter: Painter, title: str) -> None:
    """The picture's title, at the top left."""
    painter.text(MARGIN, TITLE_H / 2 + 4, title, FS_TITLE, "black", ha="left", bold=True)


def paint_caption(painter: Painter, caption: list[str], y: float) -> None:
    """The caption lines, from `y` down."""
    for i, c in enumerate(caption):
        painter.text(MARGIN, y + 14 * i, c, FS, "#333333", ha="left")


def legend_items(program: Program) -> list[tuple[str, str, str]]:
    """The legend of a diagram: (kind, colour, text) for the levels its wires use (all three
    once levels exist), the woven band, and the partitions it has."""
    items: list[tuple[str, str, str]] = []
    levels = {w.level for w in program.wires.values()}
    for lv in (*LEVEL_ORDER, None):
        if lv in levels or (lv is not None and levels - {None}):
            items.append(("wire", LEVEL_COLOURS[lv], LEVEL_NAMES[lv]))
    kinds = {b.name for b in program.walk()}
    items.append(("band", BAND_COLOUR, "woven axes (pass through)"))
    if "group" in kinds:
        items.append(("group", GROUP_COLOUR, "group partition (parallel)"))
    if "stream" in kinds:
        items.append(("stream", STREAM_COLOUR, "stream partition (sequential)"))
    return items


def legend_width(items: list[tuple[str, str, str]]) -> float:
    return sum(22 + text_width(t, FS) + 16 for _, _, t in items)


def paint_legend(painter: Painter, x: float, y: float, items: list[tuple[str, str, str]]) -> float:
    """Draw legend items (kind, colour, text) in one row from (x, y); returns the row's end."""
    ax = painter.ax
    for kind, colour, label in items:
        if kind == "wire":
            ax.plot([x, x + 18], [y, y], color=colour, lw=2.2)
        elif kind == "group":
            ax.add_patch(patches.Rectangle((x, y - 5), 18, 10, fill=False, edgecolor=colour, ls=(0, (3, 2)), lw=1.4))
        elif kind == "stream":
            ax.add_patch(patches.Rectangle((x, y - 5), 18, 10, fill=False, edgecolor=colour, lw=1.8))
        elif kind == "band":
            ax.add_patch(patches.Rectangle((x + 4, y - 5), 10, 10, fill=False, edgecolor="#555555", lw=1.0))
            ax.plot([x, x + 18], [y - 2, y - 2], color=colour, lw=0.8)
        painter.text(x + 22, y, label, FS, "black", ha="left")
        x += 22 + text_width(label, FS) + 16
    return x


def render_diagram(program: Program, path: Path, title: str, caption: list[str]) -> None:
    """The diagram picture: title, the function laid out and centred, legend, caption."""
    lay = Layout(program).block(program.body, left_names=True)
    items = legend_items(program)
    cap_w = max([text_width(c, FS) for c in caption] + [0.0])
    width = max(
        lay.w + 2 * MARGIN,
        legend_width(items) + 2 * MARGIN,
        cap_w + 2 * MARGIN,
        text_width(title, FS_TITLE, True) + 30,
    )
    height = TITLE_H + lay.h + 2 * MARGIN + 22 + 14 * len(caption) + 6
    fig, ax = figure(width, height)
    painter = Painter(ax, program)
    paint_title(painter, title)
    ox = MARGIN + max(0.0, (width - 2 * MARGIN - lay.w) / 2)
    painter.block(lay, ox, TITLE_H + MARGIN, names=True)
    y = TITLE_H + MARGIN + lay.h + MARGIN + 6
    paint_legend(painter, MARGIN, y, items)
    paint_caption(painter, caption, y + 18)
    save(fig, path)
