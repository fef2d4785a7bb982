// Interactive messages in the web app (docs/web.md): buttons, lists, forms and product cards a
// business or bot sent, answered with real buttons and fields through the node's API. What the
// sender wrote is put in the page as text, never as markup.

let ctx = null; // { api, el, showError, refresh }

export function initInteractive(c) {
  ctx = c;
}

function price(minor, currency) {
  const digits = { JPY: 0, KRW: 0, ISK: 0, BHD: 3, KWD: 3, TND: 3, JOD: 3, OMR: 3 }[currency] ?? 2;
  return `${(minor / 10 ** digits).toFixed(digits)} ${currency}`;
}

async function answer(id, body) {
  try {
    await ctx.api(`/v1/messages/${id}/answer`, { method: "POST", body });
    ctx.refresh();
  } catch (e) { ctx.showError(e); }
}

// The body of an interactive message, or null for other kinds.
export function interactiveBody(m) {
  if (m.kind !== "interactive" || !m.interactive) return null;
  const { el } = ctx;
  const i = m.interactive;
  const e = i.element || {};
  const open = i.open && m.direction === "in";
  const choiceButtons = (options) => el("div", { class: "choices" }, (options || []).map((o) =>
    el("button", { type: "button", disabled: !open, onclick: () => answer(m.id, { choices: [o.id] }) }, o.label)));
  let offer = null;
  if (e.buttons) offer = choiceButtons(e.buttons);
  else if (e.product) {
    const p = e.product;
    offer = el("div", { class: "card product" }, el("strong", {}, p.title), " ", price(p.price, p.currency),
      p.description ? el("div", {}, p.description) : null, choiceButtons(p.options));
  } else if (e.pick && !e.pick.many) offer = choiceButtons(e.pick.options);
  else if (e.pick) {
    const form = el("form", { class: "choices", onsubmit: (ev) => {
      ev.preventDefault();
      const choices = [...form.querySelectorAll("input:checked")].map((x) => x.value);
      if (choices.length) answer(m.id, { choices });
    } }, e.pick.options.map((o) => el("label", {}, el("input", { type: "checkbox", value: o.id, disabled: !open }), ` ${o.label}`)),
    el("button", { type: "submit", disabled: !open }, "Send"));
    offer = form;
  } else if (e.form) {
    const form = el("form", { class: "iform", onsubmit: (ev) => {
      ev.preventDefault();
      const fields = {};
      for (const x of form.querySelectorAll("[data-key]")) if (x.value.trim()) fields[x.dataset.key] = x.value.trim();
      answer(m.id, { fields });
    } }, e.form.fields.map((f) => {
      const k = f.kind || {};
      const id = `f-${m.id}-${f.key}`;
      let input;
      if (k.choice) input = el("select", { id, "data-key": f.key, disabled: !open }, el("option", { value: "" }, "—"),
        k.choice.map((o) => el("option", { value: o.id }, o.label)));
      else if (k.number) input = el("input", { id, type: "number", "data-key": f.key, min: k.number.min ?? undefined, max: k.number.max ?? undefined, disabled: !open });
      else if (k === "date_time") input = el("input", { id, "data-key": f.key, placeholder: "2027-06-12T18:00:00+02:00", disabled: !open });
      else input = el("input", { id, "data-key": f.key, maxlength: k.text ? k.text.max_len : undefined, disabled: !open });
      return el("div", {}, el("label", { for: id }, f.label, f.required ? " *" : ""), " ", input);
    }), el("button", { type: "submit", disabled: !open }, e.form.submit || "Send"));
    offer = form;
  }
  const answers = (i.answers || []).length && m.direction === "out"
    ? el("div", { class: "meta" }, `${i.answers.length} answer${i.answers.length === 1 ? "" : "s"}`) : null;
  return el("div", { class: "body interactive" }, el("div", {}, i.text), offer,
    i.open ? null : el("div", { class: "meta" }, "closed"), answers);
}
