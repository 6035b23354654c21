// The built-in styles (index, name, preview) from GET /v1/styles.
import { api } from "./api.js";

let cache = null;
let pending = null;

// Loads the list once per page for names; previews come with links that expire, so pickers ask afresh.
export function loadStyles({ fresh = false } = {}) {
  if (fresh || !pending) {
    pending = api("GET", "/v1/styles").then((body) => {
      cache = body;
      return body;
    }).catch((err) => {
      pending = null;
      throw err;
    });
  }
  return pending;
}

export function styleName(index) {
  const style = cache && cache.styles ? cache.styles[index] : null;
  return style ? style.name : null;
}
