// Load hook for @actions/workflow-parser 0.3.61, which imports its JSON schemas without
// `with { type: "json" }` (actions/languageservices#387), so Node refuses to load it. The hook adds that
// import attribute to every `.json` module. Used as `node --import ./register.mjs check.mjs`.
import { register } from "node:module";

const hooks = `
export async function load(url, context, next) {
  if (/\\.json(?:[?#].*)?$/.test(url)) {
    return next(url, { ...context, importAttributes: { ...context.importAttributes, type: "json" } });
  }
  return next(url, context);
}
`;

register("data:text/javascript," + encodeURIComponent(hooks), import.meta.url);
