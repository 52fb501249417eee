/*
 * Companion widget: DOM helpers shared by its files (served together as /widget.js, inside one
 * function scope: nothing here is a global of the host page).
 */

/** An element; strings among `children` become text nodes: nothing is parsed as HTML. */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === 'class') el.className = value;
    else el.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children) if (child !== null && child !== undefined) el.append(child);
  return el;
}
