// ODK's own form engine (@getodk/xforms-engine, the engine of ODK Web Forms) on an XForm and
// sets of answers: what it says of every question.
//
//     node verdicts.mjs < request.json > verdicts.json
//
// The request is `{"forms": [{"xform": "<h:html …>", "answers": [{"name": "value", …}, …]}, …]}`,
// each value
// in the XForm's text form (a select_multiple's codes joined by spaces), `null` for none. For
// each set the engine starts a new instance and answers the questions in the form's order,
// the way a person fills it: a question is answered only if it is shown (relevant) when its
// turn comes. It prints, for each form, `{"sets": [...]}` (or `{"error": "…"}` when the engine
// cannot load it), and in each set each question outside repeats and the form's `meta`:
// `{"name": {"set": bool, "relevant": bool, "required": bool, "constraint": bool, "value": "…"}}`
// (`constraint` false when the engine finds the value breaks the question's constraint).
import { JSDOM } from 'jsdom';
import { readFileSync } from 'node:fs';

// The engine expects a browser's DOM; jsdom supplies it. Its bundled tree-sitter takes Node
// for a CommonJS host and looks for these two.
const { window } = new JSDOM('');
for (const key of ['DOMParser', 'XMLSerializer', 'Node', 'Element', 'Document', 'XPathResult', 'NodeFilter']) {
  globalThis[key] ??= window[key];
}
globalThis.document ??= window.document;
globalThis.__dirname ??= '/';
globalThis.module ??= { exports: {} };
const { createInstance } = await import('@getodk/xforms-engine');

const request = JSON.parse(readFileSync(0, 'utf8'));
const leaf = (node) => !node.currentState.children;
const nameOf = (node) => node.currentState.reference.split('/').pop();

function* leaves(node) {
  const kids = node.currentState.children ?? [];
  for (const kid of kids) {
    if (kid.nodeType.startsWith('repeat')) continue;
    if (kid.nodeType === 'group' && nameOf(kid) === 'meta') continue;
    if (leaf(kid)) yield kid;
    else yield* leaves(kid);
  }
}

function answer(node, text) {
  switch (node.nodeType) {
    case 'select':
      if (node.definition.bodyElement.type === 'select') {
        node.selectValues(text === '' ? [] : text.split(' '));
      } else {
        node.selectValue(text);
      }
      break;
    case 'trigger':
      node.setValue(text === 'OK');
      break;
    case 'range':
      node.setValue(Number(text));
      break;
    case 'input':
      node.setValue(text);
      break;
    default:
      return false;
  }
  return true;
}

async function verdicts(xform, answers) {
  const form = await createInstance(xform, {
    form: { fetchFormAttachment: async () => new Response('') },
  });
  const root = form.root ?? form;
  const set = new Set();
  for (const node of leaves(root)) {
    const text = answers[nameOf(node)];
    if (text == null || !node.currentState.relevant) continue;
    try {
      if (answer(node, String(text))) set.add(nameOf(node));
    } catch {
      // A value the engine will not take for this question is left unanswered.
    }
  }
  const out = {};
  for (const node of leaves(root)) {
    const state = node.currentState;
    out[nameOf(node)] = {
      type: node.nodeType,
      set: set.has(nameOf(node)),
      relevant: state.relevant,
      required: state.required,
      constraint: node.validationState?.constraint?.valid ?? true,
      value: state.instanceValue ?? null,
    };
  }
  return out;
}

const out = [];
for (const { xform, answers } of request.forms) {
  try {
    const sets = [];
    for (const one of answers) sets.push(await verdicts(xform, one));
    // The day as the engine reads today(): the local date.
    const now = new Date();
    const today = `${now.getFullYear()}-${String(now.getMonth() + 1).padStart(2, "0")}-${String(now.getDate()).padStart(2, "0")}`;
    out.push({ sets, today });
  } catch (e) {
    out.push({ error: String(e?.message ?? e) });
  }
}
process.stdout.write(JSON.stringify(out));
