// The charts' view: the page scrolls under the wheel, and the graph keeps the user's zoom and pan across reruns.
//
// Wheel: over a chart, a plain wheel scrolls the page (it zoomed the chart, and a tall graph trapped the page);
// Ctrl/⌘ + wheel zooms the chart under the pointer. Caught on the way down, before plotly's own listener sees it.
//
// Zoom: Streamlit gives a chart a new element (a fresh plot) whenever its figure changes, so plotly's uirevision alone
// cannot keep the view: remember the axis ranges per uirevision (one prompt) and put them back on each new plot.
//
// Selection: the figure leaves the selected node out, so that a click changes no figure and Streamlit keeps the plot
// (a redraw took over a second per draw at 500 tokens). The page names the node per chart key (ui.mark_node), and a
// ring is drawn here as a layout shape, anchored at the node in data units and sized in pixels: it follows zoom and pan.
(() => {
  if (window.__lmttKeepZoom) return;
  window.__lmttKeepZoom = true;
  document.addEventListener("wheel", (event) => {
    if (event.ctrlKey || event.metaKey) return;
    if (event.target instanceof Element && event.target.closest(".js-plotly-plot")) event.stopPropagation();
  }, { capture: true });
  const saved = new Map();  // uirevision -> {"xaxis.range": [a, b], "yaxis.range": [c, d]}
  const revision = (gd) => String((gd.layout && gd.layout.uirevision) || "");
  const ranges = (gd) => gd._fullLayout ? [gd._fullLayout.xaxis.range, gd._fullLayout.yaxis.range].map(String) : null;
  // A graph purged while its relayout runs (the page changed) rejects it with plotly's "e.emit is not a function":
  // nothing is left to draw, so that rejection is dropped; any other is still thrown.
  const relayout = (gd, update, how) => how(gd, update).catch((error) => { if (gd._fullLayout) throw error; });
  const restore = (gd) => {
    const view = saved.get(revision(gd));
    const now = ranges(gd);
    if (!view || gd.__lmttRestoring || !now || (now[0] === String(view["xaxis.range"]) && now[1] === String(view["yaxis.range"]))) return;
    gd.__lmttRestoring = true;
    relayout(gd, view, window.Plotly._guiRelayout || window.Plotly.relayout).finally(() => {
      gd.__lmttRestoring = false;
      // Keep what plotly made of the view (it may round or constrain the ranges), so that the next check finds them equal.
      if (gd._fullLayout) saved.set(revision(gd), { "xaxis.range": [...gd._fullLayout.xaxis.range], "yaxis.range": [...gd._fullLayout.yaxis.range] });
    });
  };
  const watch = (gd) => {
    if (gd.__lmttWatched || !gd.on) return;
    gd.__lmttWatched = true;
    restore(gd);
    // Streamlit may redraw the same element with the figure's own ranges (a resize, a late second render): put the view
    // back after each draw. Checked a moment later, so that a zoom by the user has been saved first and is not undone.
    gd.on("plotly_afterplot", () => setTimeout(() => restore(gd), 120));
    gd.on("plotly_relayout", (event) => {
      if (gd.__lmttRestoring || !gd._fullLayout) return;
      if (Object.keys(event).some((k) => k.endsWith("autorange"))) { saved.delete(revision(gd)); return; }
      if (!Object.keys(event).some((k) => k.includes("axis"))) return;
      const layout = gd._fullLayout;
      saved.set(revision(gd), { "xaxis.range": [...layout.xaxis.range], "yaxis.range": [...layout.yaxis.range] });
    });
  };
  const RING = "lmtt-selected";
  const nodeXY = (gd, node) => {
    for (const trace of gd.data || []) {
      const i = trace.name === "nodes" && trace.customdata ? Array.prototype.indexOf.call(trace.customdata, node) : -1;
      if (i >= 0) return [trace.x[i], trace.y[i]];
    }
    return null;
  };
  const mark = (gd, node) => {
    if (!gd._fullLayout || !gd.layout || gd.__lmttMarking) return;
    const shapes = gd.layout.shapes || [];
    const ringed = shapes.some((s) => s.name === RING);
    if (gd.__lmttRing === node && ringed === !!gd.__lmttRinged) return;  // drawn already (the common case: a hover)
    const xy = node ? nodeXY(gd, node) : null;
    gd.__lmttRing = node;
    gd.__lmttRinged = !!xy;
    if (!xy && !ringed) return;
    const kept = shapes.filter((s) => s.name !== RING);
    const ring = { name: RING, type: "circle", xref: "x", yref: "y", xsizemode: "pixel", ysizemode: "pixel", layer: "above",
                   xanchor: xy && xy[0], yanchor: xy && xy[1], x0: -8, x1: 8, y0: -8, y1: 8, line: { color: "#000000", width: 3 } };
    gd.__lmttMarking = true;
    relayout(gd, { shapes: xy ? [...kept, ring] : kept }, window.Plotly.relayout).finally(() => { gd.__lmttMarking = false; });
  };
  window.lmttMark = () => (window.__lmttMarks || new Map()).forEach((node, chart) => {
    document.querySelectorAll(`.st-key-${chart} .js-plotly-plot`).forEach((gd) => {
      if (!gd.__lmttMarkWatched && gd.on) {
        gd.__lmttMarkWatched = true;
        gd.on("plotly_afterplot", () => mark(gd, window.__lmttMarks.get(chart)));  // a redraw with the figure's own shapes
      }
      mark(gd, node);
    });
  });
  const scan = () => {
    document.querySelectorAll(".st-key-graph_box .js-plotly-plot").forEach((gd) => {
      if (gd._fullLayout) watch(gd);
    });
    window.lmttMark();
  };
  new MutationObserver(scan).observe(document.body, { childList: true, subtree: true });
  scan();
})();
