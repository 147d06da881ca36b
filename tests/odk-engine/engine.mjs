// ODK's own form engine (@getodk/xforms-engine) under Node: the DOM it expects, and filling a
// form the way a person does. Shared by verdicts.mjs and submit.mjs.
import { JSDOM } from 'jsdom';

// The engine expects a browser's DOM; jsdom supplies it. Its bundled tree-sitter takes Node
// for a CommonJS host and looks for these two.
const { window } = new JSDOM('');
for (const key of ['DOMParser', 'XMLSerializer', 'Node', 'Element', 'Document', 'XPathResult', 'NodeFilter']) {
  globalThis[key] ??= window[key];
}
globalThis.document ??= window.document;
globalThis.__dirname ??= '/';
globalThis.module ??= { exports: {} };
export const { createInstance } = await import('@getodk/xforms-engine');

export const leaf = (node) => !node.currentState.children;
export const nameOf = (node) => node.currentState.reference.split('/').pop();

// The questions under `node` in the form's order, groups opened (not the form's `meta`); a
// repeat is yielded whole.
export function* questions(node) {
  for (const kid of node.currentState.children ?? []) {
    if (kid.nodeType === 'group' && nameOf(kid) === 'meta') continue;
    if (leaf(kid) || kid.nodeType.startsWith('repeat-range')) yield kid;
    else yield* questions(kid);
  }
}

export function answer(node, text) {
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

// Answers the questions under `node` from `answers` in the form's order, each only if it is
// shown when its turn comes; a repeat gets one item per answer set in its list.
export function fill(node, answers, set) {
  for (const q of questions(node)) {
    const name = nameOf(q);
    const given = answers[name];
    if (q.nodeType.startsWith('repeat-range')) {
      if (!q.currentState.relevant) continue;
      // No answers for a repeat: no items (where the person chooses how many).
      const items = Array.isArray(given) ? given : [];
      if (q.nodeType === 'repeat-range:uncontrolled') {
        const have = q.currentState.children.length;
        if (have > 0) q.removeInstances(0, have);
        if (items.length > 0) q.addInstances(undefined, items.length);
      }
      q.currentState.children.forEach((item, i) => {
        const mine = new Set();
        fill(item, items[i] ?? {}, mine);
        set.add(`${name}[${i}]`);
        for (const m of mine) set.add(`${name}[${i}].${m}`);
      });
      continue;
    }
    if (given == null || !q.currentState.relevant) continue;
    try {
      if (answer(q, String(given))) set.add(name);
    } catch {
      // A value the engine will not take for this question is left unanswered.
    }
  }
}

