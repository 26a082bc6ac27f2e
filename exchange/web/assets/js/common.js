// Shared by every page: the message catalogue, the API call with the session, Beijing time, small DOM helpers.
// No text lives here: every string shown comes from /ui/messages/<lang>.json.

export const LANGUAGES = ["zh-CN", "en"];
const LANG_KEY = "hrx.lang";
let messages = {};
export let lang = "zh-CN";

export function t(key, params = {}) {
  let text = messages[key];
  if (text === undefined) return key;
  for (const [name, value] of Object.entries(params)) text = text.split(`{${name}}`).join(String(value));
  return text;
}

export function has(key) {
  return messages[key] !== undefined;
}

/** The codes the catalogue names under ``prefix`` (``tier.`` → alliance, city, ...), sorted: lists of choices
 * come from the catalogue, the one place their names live. */
export function codesUnder(prefix) {
  return Object.keys(messages).filter((k) => k.startsWith(prefix)).map((k) => k.slice(prefix.length)).sort();
}

/** Load the user's language (persisted; zh-CN by default) and translate the page's marked elements. */
let loaded = null;

export function loadMessages() {
  if (!loaded) loaded = load();
  return loaded;
}

async function load() {
  const stored = localStorage.getItem(LANG_KEY);
  lang = LANGUAGES.includes(stored) ? stored : "zh-CN";
  const response = await fetch(`/ui/messages/${lang}.json`);
  messages = await response.json();
  document.documentElement.lang = lang;
  translate(document);
}

export function translate(root) {
  for (const node of root.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  for (const attr of ["placeholder", "title", "aria-label"]) {
    const data = `i18n${attr.replace(/(^|-)(\w)/g, (_, __, c) => c.toUpperCase())}`;
    for (const node of root.querySelectorAll(`[data-i18n-${attr}]`)) node.setAttribute(attr, t(node.dataset[data]));
  }
}

export function switchLanguage() {
  localStorage.setItem(LANG_KEY, lang === "zh-CN" ? "en" : "zh-CN");
  location.reload();
}

// --- the API ------------------------------------------------------------------------------------------------

export class ApiError extends Error {
  constructor(status, message, field) {
    super(message);
    this.status = status;
    this.field = field;
  }
}

const UNSAFE = new Set(["POST", "PUT", "PATCH", "DELETE"]);

/** The request to the API: the session cookie goes along; writes carry the CSRF token, or a patient's bearer
 * token. ``body``: a JSON value, or FormData for a file upload. */
function request(method, path, body) {
  const headers = { Accept: "application/json" };
  const form = body instanceof FormData;  // a file upload: the browser writes the multipart boundary
  if (body !== undefined && !form) headers["Content-Type"] = "application/json";
  const csrf = sessionStorage.getItem("hrx.csrf");
  if (UNSAFE.has(method) && csrf) headers["X-CSRF-Token"] = csrf;
  const bearer = sessionStorage.getItem("hrx.bearer");
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  return fetch(path, {
    method, headers, credentials: "same-origin", body: body === undefined || form ? body : JSON.stringify(body),
  });
}

async function refusal(response) {
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { /* not JSON: the status says enough */ }
  return new ApiError(response.status, (data && data.error) || response.statusText, data && data.field);
}

/** Call the JSON API (see ``request``). */
export async function api(method, path, body) {
  const response = await request(method, path, body);
  if (!response.ok) throw await refusal(response);
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

/** Call the API for a table as a file (a ``path`` with ``format=csv|xlsx``) and hand it to the browser as a
 * download, under the name the API gives it. For a table a link cannot fetch: the answer to a POST (the
 * catalogue import's unmatched rows), or a call that needs a patient's bearer token. */
export async function downloadFile(method, path, body) {
  const response = await request(method, path, body);
  if (!response.ok) throw await refusal(response);
  const named = /filename="([^"]+)"/.exec(response.headers.get("Content-Disposition") || "");
  const url = URL.createObjectURL(await response.blob());
  const link = el("a", { href: url, download: named ? named[1] : "", hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);  // after the browser has taken the file
}

/** The signed-in principal, or a trip to the login page. */
export async function requireSession(roles) {
  try {
    const me = await api("GET", "/api/v1/auth/me");
    if (roles && !roles.includes(me.role)) throw new ApiError(403, "role");
    return me;
  } catch (error) {
    location.assign(`/ui/login?next=${encodeURIComponent(location.pathname)}`);
    throw error;
  }
}

export async function logout() {
  try { await api("POST", "/api/v1/auth/logout"); } catch (_) { /* already ended */ }
  sessionStorage.clear();
  location.assign("/ui/login");
}

// --- time: Beijing time (UTC+08:00, no daylight saving since 1991), written as 2026-12-02 14:30 -----------

const BEIJING_MS = 8 * 3600 * 1000;
const pad = (n) => String(n).padStart(2, "0");

export function beijingMinute(instant) {
  if (!instant) return "";
  const ms = typeof instant === "number" ? instant : Date.parse(instant);
  if (Number.isNaN(ms)) return "";
  const d = new Date(ms + BEIJING_MS);
  return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}`;
}

export function beijingDate(instant) {
  return beijingMinute(instant).slice(0, 10);
}

/** Time left until ``instant``, in the largest whole unit (days, hours, minutes), or "expired". */
export function timeLeft(instant, now = Date.now()) {
  if (!instant) return "";
  const left = Date.parse(instant) - now;
  if (left <= 0) return t("time.expired");
  const minutes = Math.floor(left / 60000);
  if (minutes >= 1440) return t("time.days_left", { n: Math.floor(minutes / 1440) });
  if (minutes >= 60) return t("time.hours_left", { n: Math.floor(minutes / 60) });
  return t("time.minutes_left", { n: minutes });
}

// --- DOM ------------------------------------------------------------------------------------------------------

/** An element with attributes and children (text or nodes); never HTML from strings. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
  return node;
}

/** Show a message in the page's live region (screen readers announce it). */
export function announce(text, kind = "info") {
  const region = document.getElementById("status");
  if (!region) return;
  region.className = `status status-${kind}`;
  region.textContent = text;
}

export function errorText(error) {
  if (error instanceof ApiError) {
    const key = `error.${error.status}`;
    return `${has(key) ? t(key) : t("error.other")} (${error.message})`;
  }
  return `${t("error.other")} (${error.message || error})`;
}

/** The page header: who is signed in, the language switch, logging out. */
export function header(principal, { onLogout = logout } = {}) {
  const bar = document.getElementById("userbar");
  if (!bar) return;
  clear(bar);
  if (principal) {
    const role = has(`role.${principal.role}`) ? t(`role.${principal.role}`) : principal.role;
    const who = principal.name || principal.id;
    bar.append(el("span", { class: "who" }, who ? `${who} · ${role}` : role));
    bar.append(el("button", { type: "button", class: "link", onclick: onLogout, text: t("action.logout") }));
  }
  bar.append(el("button", { type: "button", class: "link", id: "lang-switch", lang: lang === "zh-CN" ? "en" : "zh-CN",
    onclick: switchLanguage, text: t("action.other_language") }));
}

/** A hospital grade (codes.model.GRADES) in the reader's words. */
export function gradeName(grade) {
  return grade && has(`grade.${grade}`) ? t(`grade.${grade}`) : grade || "";
}

/** A watermark of the viewer's name and the time over ``node`` (a report being shown). */
export function watermark(node, name) {
  node.classList.add("watermarked");
  for (const old of node.querySelectorAll(":scope > .watermark")) old.remove();
  const text = `${name} ${beijingMinute(Date.now())}`;
  const mark = el("div", { class: "watermark", "aria-hidden": "true", "data-watermark": text });
  for (let i = 0; i < 24; i += 1) mark.append(el("span", {}, text));
  node.append(mark);
}

/** Mask a resident ID after entry: the first 6 and last 4 characters stay. */
export function maskId(value) {
  if (!value) return "";
  return value.length <= 10 ? "*".repeat(value.length) : `${value.slice(0, 6)}${"*".repeat(value.length - 10)}${value.slice(-4)}`;
}

/** Open a <dialog> and resolve with the value its form returns (null on cancel). */
export function openDialog(dialog, onSubmit) {
  return new Promise((resolve) => {
    const form = dialog.querySelector("form");
    const cancel = dialog.querySelector("[data-cancel]");
    const done = (value) => {
      form.removeEventListener("submit", submit);
      cancel.removeEventListener("click", cancelled);
      dialog.removeEventListener("cancel", cancelled);
      dialog.close();
      resolve(value);
    };
    const submit = async (event) => {
      event.preventDefault();
      const value = await onSubmit(form);
      if (value !== undefined) done(value);
    };
    const cancelled = (event) => { event.preventDefault(); done(null); };
    form.addEventListener("submit", submit);
    cancel.addEventListener("click", cancelled);
    dialog.addEventListener("cancel", cancelled);
    dialog.showModal();
  });
}
