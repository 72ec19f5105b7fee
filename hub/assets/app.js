// Tabadul hub dashboard: indicator explorer and transparency log.
// Plain browser JS, no dependencies. Everything the page shows comes from the hub's
// /api/v1 JSON API on the same origin; all text shown to users goes through t().
'use strict';

/* ---- strings ---- */

const I18N = {
  en: {
    appTitle: 'Tabadul', appSubtitle: 'Arab Labour Organization · labour-market statistics from member states',
    tabExplorer: 'Indicator explorer', tabTransparency: 'Transparency log', langToggle: 'العربية',
    tabCorridors: 'Migration corridors', corTitle: 'Labour migration corridors: mirror statistics',
    corIntro: 'The origin’s placements abroad beside the destination’s work permits, visas and migrant workers of the origin’s nationality. Each side is answered by its own member under its own rules; a refused side is shown as refused, never as zero.',
    corOrigin: 'Origin (nationals placed abroad)', corDestination: 'Destination', corHeading: '{origin} → {destination}',
    corSame: 'Choose two different members.', loadingCorridor: 'Asking both members…',
    side_placements: 'Placements abroad (origin)', side_permits: 'Work permits (destination)', side_visas: 'Work-contract visas (destination)', side_stock: 'Migrant workers, stock (destination)',
    asym_permits: 'Asymmetry, permits', asym_visas: 'Asymmetry, visas', notGranted: 'refused', noCover: 'no figure',
    corAsymmetry: 'Asymmetry = (destination − origin) ÷ the larger of the two: positive when the destination counts more. Placements by the employment service are usually a small part of those who go.',
    tokenSummary: 'Operator token', tokenLabel: 'Bearer token', tokenApply: 'Apply', tokenClear: 'Clear',
    modePublic: 'Public access', tokenRejected: 'Token rejected', modeOperator: 'Operator: {name}', viaToken: 'token', viaCertificate: 'certificate',
    flow: 'Indicator', breakdown: 'Breakdown', noBreakdown: 'None (totals only)', codes: 'Categories',
    members: 'Member states', all: 'All', noneSel: 'None', start: 'From period', end: 'To period',
    aggregate: 'Regional aggregate', run: 'Run query',
    loadingCatalogue: 'Loading the catalogue…', loading: 'Querying the member nodes…', loadingReleases: 'Loading releases…',
    titleBy: '{flow} by {dim}', titleRange: '{from}–{to}',
    resultMeta: 'Query digest {digest} · cache {cache} · hub log leaf {leaf}',
    unitPercent: 'Percent', unitPersons: 'Persons', multNote: '{unit}, {mult}',
    mult3: 'thousands', mult6: 'millions', mult9: 'billions', multN: '× 10^{n}',
    legendAggregate: 'Regional aggregate', legendHint: 'Hover to highlight, click to hide or show a line.',
    membersTitle: 'Member responses', summary: '{a} answered · {r} refused · {u} unavailable',
    answered: 'answered', refused: 'refused', unreachable: 'unreachable', 'timed-out': 'timed out', failed: 'failed',
    cellsN: '{n} cells', cellsN_one: '{n} cell', partial: 'partial', rule: 'rule {r}', policy: 'policy {v}', ms: '{n} ms',
    tableTitle: 'Released cells', colCountry: 'Country', colPeriod: 'Period', colValue: 'Value', colFlags: 'Flags',
    withheld: 'withheld', noData: 'No cells were released for this query.',
    aggTitle: 'Regional aggregate', aggMethod: 'Method', aggNone: 'No regional aggregate was computed for this query.',
    covers: 'covers {n} of {m} members:', colCoverage: 'Coverage',
    obs: 'Observation status', conf: 'Confidentiality status',
    obsA: 'Normal value', obsP: 'Provisional value', obsE: 'Estimated value', obsM: 'Missing value',
    confF: 'Free: may be published', confC: 'Confidential: primary suppression', confD: 'Secondary suppression (protects a confidential cell)',
    'flag-cell-key': 'Cell-key perturbation: small random noise added to protect confidentiality',
    'flag-threshold': 'Below the minimum-count threshold',
    errNetwork: 'Cannot reach the hub. Check the network connection and try again.',
    errAuth: 'enter an operator token (top of the page) to access this.',
    errRate: 'Too many requests, try again in {n} s.', errHttp: 'Error {code}:',
    errNoMembers: 'Select at least one member state.', errNoCodes: 'Select at least one category.',
    checkpointTitle: 'Hub log checkpoint',
    checkpointExplain: 'The latest signed checkpoint of the hub’s append-only log ({origin}, {size} entries). It commits to every release listed below; an auditor verifies it offline with tabadul-audit verify.',
    trTitle: 'What left each country',
    trIntro: 'Every answer a member node gives is recorded in the member’s own log and in the hub’s log.',
    filterMember: 'Member state', allMembers: 'All member states', refresh: 'Refresh',
    colTime: 'Time (UTC)', colOperator: 'Requested by', colDataflow: 'Indicator', colDecision: 'Member’s decision',
    colMemberLog: 'Member log', colHubLeaf: 'Hub log', leafOf: 'leaf {leaf} of {size}', leafN: 'leaf {leaf}',
    verify: 'Verify', verifying: 'Verifying…', verified: 'In the member’s signed log (checkpoint of {size} entries)',
    releasesN: '{n} releases', releasesN_one: '{n} release', noReleases: 'No releases recorded.',
    footer: 'Arab Labour Organization · Tabadul · data dictionary', none: '—',
  },
  ar: {
    appTitle: 'تبادل', appSubtitle: 'منظمة العمل العربية · إحصاءات سوق العمل من الدول الأعضاء',
    tabExplorer: 'مستكشف المؤشرات', tabTransparency: 'سجل الشفافية', langToggle: 'English',
    tabCorridors: 'ممرات هجرة العمل', corTitle: 'ممرات هجرة العمل: الإحصاءات المتناظرة',
    corIntro: 'توظيفات بلد المنشأ في الخارج إلى جانب تصاريح العمل والتأشيرات والعمال المهاجرين من جنسيته في بلد المقصد. تجيب كل دولة عن جانبها وفق قواعدها؛ والجانب المرفوض يُعرض مرفوضًا، لا صفرًا.',
    corOrigin: 'بلد المنشأ (المواطنون الموظفون في الخارج)', corDestination: 'بلد المقصد', corHeading: '{origin} ← {destination}',
    corSame: 'اختر دولتين مختلفتين.', loadingCorridor: 'جارٍ سؤال الدولتين…',
    side_placements: 'التوظيف في الخارج (بلد المنشأ)', side_permits: 'تصاريح العمل (بلد المقصد)', side_visas: 'تأشيرات عقود العمل (بلد المقصد)', side_stock: 'رصيد العمال المهاجرين (بلد المقصد)',
    asym_permits: 'عدم التناظر، التصاريح', asym_visas: 'عدم التناظر، التأشيرات', notGranted: 'مرفوض', noCover: 'لا رقم',
    corAsymmetry: 'عدم التناظر = (بلد المقصد − بلد المنشأ) ÷ الأكبر بينهما: يكون موجبًا حين يُحصي بلد المقصد أكثر. ولا تمثّل توظيفات خدمات التشغيل عادةً إلا جزءًا صغيرًا من المغادرين.',
    tokenSummary: 'رمز المشغّل', tokenLabel: 'رمز الدخول', tokenApply: 'تطبيق', tokenClear: 'مسح',
    modePublic: 'وصول عام', tokenRejected: 'رُفض الرمز', modeOperator: 'المشغّل: {name}', viaToken: 'رمز', viaCertificate: 'شهادة',
    flow: 'المؤشر', breakdown: 'التصنيف حسب', noBreakdown: 'بدون (المجاميع فقط)', codes: 'الفئات',
    members: 'الدول الأعضاء', all: 'الكل', noneSel: 'لا شيء', start: 'من الفترة', end: 'إلى الفترة',
    aggregate: 'المجمّع الإقليمي', run: 'تنفيذ الاستعلام',
    loadingCatalogue: 'جارٍ تحميل الفهرس…', loading: 'جارٍ استعلام عُقد الدول الأعضاء…', loadingReleases: 'جارٍ تحميل سجل الإفراجات…',
    titleBy: '{flow} حسب {dim}', titleRange: '{from}–{to}',
    resultMeta: 'بصمة الاستعلام {digest} · الذاكرة المؤقتة {cache} · ورقة سجل المركز {leaf}',
    unitPercent: 'نسبة مئوية', unitPersons: 'أشخاص', multNote: '{unit}، {mult}',
    mult3: 'بالآلاف', mult6: 'بالملايين', mult9: 'بالمليارات', multN: '× 10^{n}',
    legendAggregate: 'المجمّع الإقليمي', legendHint: 'مرّر المؤشر لإبراز خط، وانقر لإخفائه أو إظهاره.',
    membersTitle: 'ردود الدول الأعضاء', summary: 'أجابت {a} · رفضت {r} · تعذّر الوصول إلى {u}',
    answered: 'أجابت', refused: 'رفضت', unreachable: 'تعذّر الوصول', 'timed-out': 'انتهت المهلة', failed: 'فشل',
    cellsN: '{n} خلية', cellsN_zero: 'لا خلايا', cellsN_one: 'خلية واحدة', cellsN_two: 'خليتان', cellsN_few: '{n} خلايا', partial: 'جزئي', rule: 'القاعدة {r}', policy: 'السياسة {v}', ms: '{n} ملّي ثانية',
    tableTitle: 'الخلايا المُفرج عنها', colCountry: 'البلد', colPeriod: 'الفترة', colValue: 'القيمة', colFlags: 'العلامات',
    withheld: 'محجوبة', noData: 'لم يُفرج عن أي خلية لهذا الاستعلام.',
    aggTitle: 'المجمّع الإقليمي', aggMethod: 'طريقة الحساب', aggNone: 'لم يُحسب مجمّع إقليمي لهذا الاستعلام.',
    covers: 'يغطي {n} من {m} دولة:', colCoverage: 'التغطية',
    obs: 'حالة المشاهدة', conf: 'حالة السرية',
    obsA: 'قيمة عادية', obsP: 'قيمة أولية', obsE: 'قيمة تقديرية', obsM: 'قيمة مفقودة',
    confF: 'حرّة: يجوز نشرها', confC: 'سرية: حجب أولي', confD: 'حجب ثانوي (لحماية خلية سرية)',
    'flag-cell-key': 'تشويش مفتاح الخلية: أُضيف ضجيج عشوائي صغير لحماية السرية',
    'flag-threshold': 'دون الحد الأدنى المسموح به للعدد',
    errNetwork: 'تعذّر الاتصال بالمركز. تحقّق من الشبكة وأعد المحاولة.',
    errAuth: 'أدخل رمز المشغّل (أعلى الصفحة) للوصول إلى هذه البيانات.',
    errRate: 'طلبات كثيرة جدًا، أعد المحاولة بعد {n} ثانية.', errHttp: 'خطأ {code}:',
    errNoMembers: 'اختر دولة عضوًا واحدة على الأقل.', errNoCodes: 'اختر فئة واحدة على الأقل.',
    checkpointTitle: 'نقطة تدقيق سجل المركز',
    checkpointExplain: 'أحدث نقطة تدقيق موقّعة لسجل المركز غير القابل للتعديل ({origin}، {size} مدخلًا). وهي تُلزم المركز بكل الإفراجات المدرجة أدناه، ويتحقق منها المدقق دون اتصال بالأمر tabadul-audit verify.',
    trTitle: 'ما خرج من كل دولة',
    trIntro: 'كل إجابة تقدّمها عقدة دولة عضو تُسجَّل في سجل الدولة نفسها وفي سجل المركز.',
    filterMember: 'الدولة العضو', allMembers: 'جميع الدول الأعضاء', refresh: 'تحديث',
    colTime: 'الوقت (التوقيت العالمي)', colOperator: 'الجهة الطالبة', colDataflow: 'المؤشر', colDecision: 'قرار الدولة',
    colMemberLog: 'سجل الدولة', colHubLeaf: 'سجل المركز', leafOf: 'الورقة {leaf} من {size}', leafN: 'الورقة {leaf}',
    verify: 'تحقّق', verifying: 'جارٍ التحقق…', verified: 'مُثبت في سجل الدولة الموقّع (نقطة تحقق من {size} مدخلًا)',
    releasesN: '{n} إفراج', releasesN_one: 'إفراج واحد', releasesN_two: 'إفراجان', releasesN_few: '{n} إفراجات', releasesN_many: '{n} إفراجًا', noReleases: 'لا توجد إفراجات مسجّلة.',
    footer: 'منظمة العمل العربية · تبادل · قاموس البيانات', none: '—',
  },
};

const LOCALE = { en: 'en-GB', ar: 'ar-EG' };
const STATES = ['answered', 'refused', 'unreachable', 'timed-out', 'failed'];
const VIEWS = ['explorer', 'corridors', 'transparency'];
const TAB_TITLE = { explorer: 'tabExplorer', corridors: 'tabCorridors', transparency: 'tabTransparency' };
// 22 distinguishable colours: a member keeps its colour (by catalogue order) in every chart.
const PALETTE = ['#1f77b4', '#d95f02', '#2ca02c', '#d62728', '#7b4fa6', '#8c564b', '#e377c2', '#5f6b73',
  '#a59d00', '#17a2b8', '#393b79', '#637939', '#b5651d', '#843c39', '#a13c8f', '#3182bd',
  '#e6550d', '#31a354', '#756bb1', '#0b6e4f', '#c0392b', '#6b8e23'];
const AGG_COLOUR = '#1b2631';
const TOKEN_KEY = 'tabadul.token';

/* ---- state ---- */

const state = {
  lang: 'ar', view: 'explorer', token: sessionStorage.getItem(TOKEN_KEY) || '',
  who: null, catalogue: null, catalogueError: null,
  form: null,            // what the controls show
  query: null,           // the query behind the displayed result (frozen copy of form)
  result: null, error: null, busy: false, seq: 0,
  releases: null, relError: null, relMember: '', relBusy: false, relSeq: 0,
  corridor: null, corSeq: 0,
  hidden: new Set(),     // chart series the user switched off via the legend
};

const $ = (sel) => document.querySelector(sel);

function t(key, vars) {
  let s = I18N[state.lang][key] ?? I18N.en[key] ?? key;
  if (vars) s = s.replace(/\{(\w+)\}/g, (m, k) => (k in vars ? vars[k] : m));
  return s;
}

/* ---- DOM helpers ---- */

// h('tag', {attr: value, class: ..., data: {...}, onclick: fn}, ...children). Text children are
// inserted as text nodes, never as HTML: names and messages come from 22 different nodes.
function h(tag, attrs, ...kids) { return build(document.createElement(tag), attrs, kids); }
function s(tag, attrs, ...kids) { return build(document.createElementNS('http://www.w3.org/2000/svg', tag), attrs, kids); }
function build(el, attrs, kids) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k === 'data') for (const [dk, dv] of Object.entries(v)) el.dataset[dk] = dv;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    // The page's own policy (style-src 'self') blocks a style attribute set
    // with setAttribute, silently dropping every colour key; the CSSOM is
    // allowed. So `style` is applied one declaration at a time.
    else if (k === 'style') {
      for (const decl of String(v).split(';')) {
        const at = decl.indexOf(':');
        if (at > 0) el.style.setProperty(decl.slice(0, at).trim(), decl.slice(at + 1).trim());
      }
    }
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const kid of kids.flat()) if (kid != null && kid !== false) el.append(kid instanceof Node ? kid : String(kid));
  return el;
}

/* ---- formatting ---- */

const fmtCache = new Map();
function numFmt(minFrac, maxFrac) {
  const key = `${state.lang}|${minFrac}|${maxFrac}`;
  if (!fmtCache.has(key)) fmtCache.set(key, new Intl.NumberFormat(LOCALE[state.lang], { minimumFractionDigits: minFrac, maximumFractionDigits: maxFrac }));
  return fmtCache.get(key);
}
const fmtInt = (n) => numFmt(0, 0).format(n);
// Counted phrases: picks key_one / key_two / key_few ... by the language's plural rules (Arabic has six).
function plural(key, n) {
  const variant = `${key}_${new Intl.PluralRules(LOCALE[state.lang]).select(n)}`;
  return t(variant in I18N[state.lang] ? variant : key, { n: fmtInt(n) });
}
const fmtNum = (v, dec) => (v == null ? t('none') : numFmt(dec ?? 0, dec ?? 2).format(v));
function fmtTime(iso) {
  const d = new Date(iso);
  if (isNaN(d)) return iso;
  return new Intl.DateTimeFormat(LOCALE[state.lang], { dateStyle: 'medium', timeStyle: 'short', timeZone: 'UTC' }).format(d);
}
// Periods are SDMX strings (2020, 2020-Q1, 2020-03): keep them, but show Arabic-Indic digits in Arabic.
const fmtPeriod = (p) => (state.lang === 'ar' ? String(p).replace(/\d/g, (d) => '٠١٢٣٤٥٦٧٨٩'[d]) : String(p));
// Number of decimals to show for a set of values, so a column reads 9.0 / 12.5 rather than 9 / 12.5.
function decimalsOf(values) {
  let dec = 0;
  for (const v of values) if (v != null && isFinite(v)) dec = Math.max(dec, (String(v).split('.')[1] || '').length);
  return Math.min(dec, 3);
}

const nameOf = (n) => (n ? n[state.lang] || n.en || '' : '');
const flowById = (id) => state.catalogue?.dataflows.find((f) => f.id === id);
function memberName(code) {
  const m = state.catalogue?.members.find((x) => x.code === code);
  return m ? nameOf(m.name) : code;
}
const dimName = (flow, id) => nameOf(flow?.dimensions.find((d) => d.id === id)?.name) || id;
const interleave = (xs, sep) => xs.flatMap((x, i) => (i ? [sep, x] : [x]));
function codeName(flow, dimId, code) {
  const c = flow?.dimensions.find((d) => d.id === dimId)?.codes.find((x) => x.id === code);
  return c ? nameOf(c.name) : code;
}
function memberColour(code) {
  const i = state.catalogue ? state.catalogue.members.findIndex((m) => m.code === code) : -1;
  return i < 0 ? '#777' : PALETTE[i % PALETTE.length];
}
const byName = () => new Intl.Collator(LOCALE[state.lang]).compare;
const sortedMembers = () => [...(state.catalogue?.members || [])].sort((a, b) => byName()(nameOf(a.name), nameOf(b.name)));

function unitLabel(flow, mult) {
  const unit = { percent: t('unitPercent'), persons: t('unitPersons') }[flow?.unit] || flow?.unit || '';
  if (!mult) return unit;
  const m = { 3: t('mult3'), 6: t('mult6'), 9: t('mult9') }[mult] || t('multN', { n: mult });
  return unit ? t('multNote', { unit, mult: m }) : m;
}

/* ---- API ---- */

class ApiError extends Error {
  constructor(status, message, retryAfter) { super(message); this.status = status; this.retryAfter = retryAfter; }
}

// The API lives next to /ui/ (../api/v1, ../sdmx), so a reverse-proxy path prefix keeps working.
const apiUrl = (path) => new URL('../' + path, location.href).toString();

async function api(path, init = {}) {
  const headers = new Headers(init.headers || {});
  if (state.token) headers.set('Authorization', 'Bearer ' + state.token);
  let res;
  try {
    res = await fetch(apiUrl(path), { ...init, headers, cache: 'no-store' });
  } catch (e) {
    throw new ApiError(0, t('errNetwork'));
  }
  if (!res.ok) {
    let msg = res.statusText;
    try { msg = (await res.json())?.error?.message || msg; } catch (e) { /* not JSON: keep the status text */ }
    throw new ApiError(res.status, msg, res.headers.get('Retry-After'));
  }
  return res;
}

// Error text for the page. The hub's message is English and wrapped in <bdi>, so it keeps its
// own direction inside an Arabic sentence instead of reordering it.
function errorText(err) {
  const msg = () => h('bdi', {}, err.message);
  if (!(err instanceof ApiError) || err.status === 0) return [err?.message || String(err)];
  if (err.status === 401 || err.status === 403) return [msg(), ' — ', t('errAuth')];
  if (err.status === 429) {
    // Retry-After is either delay-seconds or an HTTP date.
    let n = Number(err.retryAfter);
    if (!Number.isFinite(n) && err.retryAfter) n = Math.max(0, Math.ceil((Date.parse(err.retryAfter) - Date.now()) / 1000));
    return [t('errRate', { n: Number.isFinite(n) ? fmtInt(n) : '?' })];
  }
  return [t('errHttp', { code: fmtInt(err.status) }), ' ', msg()];
}

// Fills a status or error box; empty content hides it.
function showBox(el, content, kind) {
  const parts = [content || []].flat().filter((x) => x !== '');
  el.hidden = !parts.length;
  el.replaceChildren();
  if (parts.length) el.append(kind === 'busy' ? h('span', { class: 'spinner', 'aria-hidden': 'true' }) : '', h('span', {}, ...parts));
}

/* ---- URL, language, views ---- */

function parseHash() {
  const parts = location.hash.replace(/^#/, '').split('&').filter(Boolean);
  let view = null, token = null;
  for (const p of parts) {
    if (p.startsWith('token=')) token = decodeURIComponent(p.slice(6));
    else if (VIEWS.includes(p)) view = p;
  }
  return { view, token };
}

// Rewrites the address bar: language, the query on display (so the link can be shared),
// and the view. The token is never written back: it must not stay in the history.
function updateUrl() {
  const u = new URL(location.href);
  const q = new URLSearchParams({ lang: state.lang });
  const qq = state.query;
  if (qq) {
    q.set('run', '1');
    q.set('flow', qq.flow);
    if (qq.breakdown) { q.set('breakdown', qq.breakdown); q.set('codes', qq.codes.join(',')); }
    if (qq.members.length !== state.catalogue?.members.length) q.set('members', qq.members.join(','));
    if (qq.start) q.set('start', qq.start);
    if (qq.end) q.set('end', qq.end);
    if (!qq.aggregate) q.set('aggregate', '0');
  } else {
    for (const [k, v] of u.searchParams) if (k !== 'lang') q.set(k, v);
  }
  u.search = q.toString().replace(/%2C/g, ',');
  u.hash = state.view;
  history.replaceState(null, '', u);
}

function applyLanguage() {
  const root = document.documentElement;
  root.lang = state.lang;
  root.dir = state.lang === 'ar' ? 'rtl' : 'ltr';
  document.title = `${t('appTitle')} · ${t(TAB_TITLE[state.view] || 'tabExplorer')}`;
  for (const el of document.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  const toggle = $('#lang-toggle');
  toggle.textContent = t('langToggle');
  toggle.lang = state.lang === 'ar' ? 'en' : 'ar';
  $('#dict-version').textContent = state.catalogue ? fmtPeriod(state.catalogue.dictionary_version) : '';
  renderIdentity();
}

function renderIdentity() {
  const el = $('#identity');
  const w = state.who;
  const op = w && w.tier === 'operator' && w.operator;
  el.dataset.tier = op ? 'operator' : w?.rejected ? 'rejected' : 'public';
  el.textContent = op ? t('modeOperator', { name: w.operator }) : t(w?.rejected ? 'tokenRejected' : 'modePublic');
  if (op && w.via) el.append(h('small', {}, ` (${t(w.via === 'certificate' ? 'viaCertificate' : 'viaToken')})`));
}

function showView() {
  for (const v of VIEWS) {
    $(`#view-${v}`).hidden = state.view !== v;
    const tab = $(`#tab-${v}`);
    tab.setAttribute('aria-selected', String(state.view === v));
    tab.classList.toggle('active', state.view === v);
  }
  applyLanguage();
  if (state.view === 'transparency' && !state.releases && !state.relBusy) loadReleases();
  if (state.view === 'explorer') drawChart(); // the chart measures its container, which was hidden
  if (state.view === 'corridors') renderCorridorControls();
}

function switchLanguage() {
  if (state.form) readForm(); // keep unsaved ticks across the re-render
  state.lang = state.lang === 'ar' ? 'en' : 'ar';
  updateUrl();
  applyLanguage();
  renderControls();
  renderResult();
  renderReleases();
  renderCorridorControls();
  renderCorridor();
}

/* ---- identity & token ---- */

async function loadWhoami() {
  try { state.who = await (await api('api/v1/whoami')).json(); } catch (e) { state.who = { rejected: e.status === 401 }; }
  renderIdentity();
}

function setToken(tok) {
  state.token = tok.trim();
  if (state.token) sessionStorage.setItem(TOKEN_KEY, state.token); else sessionStorage.removeItem(TOKEN_KEY);
  $('#token-input').value = '';
  $('#token-box').open = false;
  loadWhoami();
  if (!state.catalogue) loadCatalogue();
  if (state.view === 'transparency' || state.releases) loadReleases();
}

/* ---- explorer: controls ---- */

const indicatorFlows = () => (state.catalogue?.dataflows || []).filter((f) => (f.kind || 'indicator') === 'indicator');
const breakdownDims = (flow) => (flow?.dimensions || []).filter((d) => d.id !== 'REF_AREA' && d.id !== 'TIME_PERIOD');
function defaultCodes(flow, dimId) {
  const d = flow?.dimensions.find((x) => x.id === dimId);
  return d ? d.codes.filter((c) => c.id !== d.total).map((c) => c.id) : [];
}

function formFromUrl(params) {
  const list = (k) => (params.get(k) || '').split(',').map((x) => x.trim()).filter(Boolean);
  const all = state.catalogue.members.map((m) => m.code);
  const run = params.get('run') === '1';
  const flowId = params.get('flow') || indicatorFlows()[0]?.id || '';
  const flow = flowById(flowId);
  const breakdown = params.get('breakdown') && breakdownDims(flow).some((d) => d.id === params.get('breakdown')) ? params.get('breakdown') : '';
  return {
    flow: flowId,
    breakdown,
    codes: list('codes').length ? list('codes') : defaultCodes(flow, breakdown),
    members: list('members').length ? list('members') : all,
    start: params.get('start') ?? (run ? '' : '2015'),
    end: params.get('end') ?? (run ? '' : '2024'),
    aggregate: params.get('aggregate') !== '0',
  };
}

function checkbox(name, value, label, checked, extra) {
  return h('label', { class: 'check', title: label },
    h('input', { type: 'checkbox', name, value, checked }),
    extra || '', h('span', {}, label));
}

function renderControls() {
  const cat = state.catalogue, f = state.form;
  if (!cat || !f) return;
  const flows = indicatorFlows();
  const flowOpts = flows.map((fl) => h('option', { value: fl.id, selected: fl.id === f.flow }, nameOf(fl.name)));
  if (!flowById(f.flow)) flowOpts.unshift(h('option', { value: f.flow, selected: true }, f.flow));
  $('#flow').replaceChildren(...flowOpts);

  const flow = flowById(f.flow);
  $('#breakdown').replaceChildren(h('option', { value: '' }, t('noBreakdown')),
    ...breakdownDims(flow).map((d) => h('option', { value: d.id, selected: d.id === f.breakdown }, nameOf(d.name))));

  const dim = flow?.dimensions.find((d) => d.id === f.breakdown);
  $('#codes-box').hidden = !dim;
  $('#codes').replaceChildren(...(dim ? dim.codes.map((c) => checkbox('code', c.id, nameOf(c.name), f.codes.includes(c.id))) : []));

  $('#member-picks').replaceChildren(...sortedMembers().map((m) => checkbox('member', m.code, nameOf(m.name), f.members.includes(m.code),
    h('span', { class: 'swatch', style: `background:${memberColour(m.code)}`, 'aria-hidden': 'true' }))));
  $('#start').value = f.start;
  $('#end').value = f.end;
  $('#start').placeholder = $('#end').placeholder = '2015';
  $('#aggregate-on').checked = f.aggregate;
}

// Reads the controls back into state.form (order of codes follows the catalogue, members the catalogue too).
function readForm() {
  const f = state.form;
  const checked = (name) => new Set([...document.querySelectorAll(`input[name=${name}]:checked`)].map((i) => i.value));
  const codes = checked('code'), members = checked('member');
  const dim = flowById(f.flow)?.dimensions.find((d) => d.id === f.breakdown);
  f.codes = dim ? dim.codes.map((c) => c.id).filter((c) => codes.has(c)) : [];
  f.members = state.catalogue.members.map((m) => m.code).filter((c) => members.has(c));
  f.start = $('#start').value.trim();
  f.end = $('#end').value.trim();
  f.aggregate = $('#aggregate-on').checked;
}

function wireControls() {
  $('#flow').addEventListener('change', (e) => {
    readForm();
    const f = state.form, flow = flowById(e.target.value);
    f.flow = e.target.value;
    if (!breakdownDims(flow).some((d) => d.id === f.breakdown)) f.breakdown = '';
    f.codes = defaultCodes(flow, f.breakdown);
    renderControls();
  });
  $('#breakdown').addEventListener('change', (e) => {
    readForm();
    state.form.breakdown = e.target.value;
    state.form.codes = defaultCodes(flowById(state.form.flow), e.target.value);
    renderControls();
  });
  const setAll = (on) => { for (const i of document.querySelectorAll('input[name=member]')) i.checked = on; };
  $('#members-all').addEventListener('click', () => setAll(true));
  $('#members-none').addEventListener('click', () => setAll(false));
  $('#query-form').addEventListener('submit', (e) => { e.preventDefault(); readForm(); runQuery(); });
}

/* ---- explorer: query ---- */

function markReady() { document.body.dataset.ready = '1'; }

async function runQuery() {
  const q = structuredClone(state.form);
  let problem = null;
  if (!q.members.length) problem = t('errNoMembers');
  else if (q.breakdown && !q.codes.length) problem = t('errNoCodes');
  if (problem) {
    state.error = new Error(problem); state.result = null;
    renderResult(); markReady();
    return;
  }
  const body = { dataflow: q.flow, aggregate: q.aggregate };
  if (q.breakdown) { body.breakdown = [q.breakdown]; body.filters = { [q.breakdown]: q.codes }; }
  if (q.start) body.start_period = q.start;
  if (q.end) body.end_period = q.end;
  // An absent member list means "all members" to the hub; only send a real selection.
  if (q.members.length !== state.catalogue.members.length) body.members = q.members;

  const seq = ++state.seq; // a slower, older answer must not overwrite a newer one
  state.busy = true;
  renderBusy();
  try {
    const res = await api('api/v1/query', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
    const data = await res.json();
    if (seq !== state.seq) return;
    state.result = data; state.error = null;
  } catch (err) {
    if (seq !== state.seq) return;
    state.result = null; state.error = err;
  }
  state.query = q;
  state.busy = false;
  state.hidden.clear();
  // A regional *sum* dwarfs every member's line or bar: start with it switched off in the chart
  // (its legend entry brings it back; the aggregate table always shows it).
  const peak = (cells) => Math.max(0, ...(cells || []).map((c) => Math.abs(c.value ?? 0)));
  if (state.result && peak(state.result.aggregate?.cells) > 2.5 * peak(state.result.cells)) state.hidden.add('aggregate');
  updateUrl();
  renderBusy();
  renderResult();
  markReady();
}

function renderBusy() {
  showBox($('#status'), state.busy ? t('loading') : '', 'busy');
  $('#run').disabled = state.busy;
  $('#result').classList.toggle('stale', state.busy);
  $('#view-explorer').setAttribute('aria-busy', String(state.busy));
}

/* ---- explorer: result model ---- */

// Turns the API result into series keyed by member and breakdown code(s), in display order.
function model() {
  const r = state.result, q = state.query, flow = flowById(q.flow);
  const dims = r.dimensions;
  const iArea = dims.indexOf('REF_AREA'), iTime = dims.indexOf('TIME_PERIOD');
  // Series vary by the chosen breakdown only: every other dimension is
  // held at its total code and would only lengthen the labels.
  const varies = (i) => new Set(r.cells.map((c) => c.key[i])).size > 1;
  const brk = dims.map((d, i) => [d, i])
    .filter(([d, i]) => d !== 'REF_AREA' && d !== 'TIME_PERIOD' && (d === q.breakdown || varies(i)));
  const codeKey = (key, pairs) => pairs.map(([, i]) => key[i]).join('|');
  const codeLabel = (ck, pairs) => ck.split('|').map((c, j) => codeName(flow, pairs[j][0], c)).join(' · ');

  // Order the breakdown categories as the user listed them (catalogue order), unknown ones last.
  const rank = (ck) => { const i = q.codes.indexOf(ck); return i < 0 ? 1e6 : i; };
  const codeKeys = [...new Set(r.cells.map((c) => codeKey(c.key, brk)))].sort((a, b) => rank(a) - rank(b));

  const agg = r.aggregate;
  const aDims = agg?.dimensions || [];
  const aTime = aDims.indexOf('TIME_PERIOD');
  const aBrk = aDims.map((d, i) => [d, i]).filter(([d]) => d !== 'TIME_PERIOD' && brk.some(([b]) => b === d));

  const periods = [...new Set([...r.cells.map((c) => c.key[iTime]), ...(agg?.cells || []).map((c) => c.key[aTime])])].sort();
  const series = new Map();
  for (const c of r.cells) {
    const ck = codeKey(c.key, brk), m = c.key[iArea], id = `${m}|${ck}`;
    if (!series.has(id)) series.set(id, { id, member: m, code: ck, codeIdx: codeKeys.indexOf(ck), colour: memberColour(m),
      label: memberName(m) + (ck ? ' · ' + codeLabel(ck, brk) : ''), points: new Map() });
    series.get(id).points.set(c.key[iTime], c.value);
  }
  const aggSeries = [];
  for (const c of agg?.cells || []) {
    const ck = codeKey(c.key, aBrk);
    let sr = aggSeries.find((x) => x.code === ck);
    if (!sr) aggSeries.push(sr = { id: `aggregate|${ck}`, member: 'aggregate', code: ck, codeIdx: Math.max(0, codeKeys.indexOf(ck)),
      colour: AGG_COLOUR, label: t('legendAggregate') + (ck ? ' · ' + codeLabel(ck, aBrk) : ''), points: new Map() });
    sr.points.set(c.key[aTime], c.value);
  }
  const members = [...new Set(r.cells.map((c) => c.key[iArea]))].sort((a, b) => byName()(memberName(a), memberName(b)));
  // Members' cells and the computed aggregate each get their own precision.
  const dec = decimalsOf(r.cells.map((c) => c.value));
  const aggDec = decimalsOf((agg?.cells || []).map((c) => c.value));
  return { flow, dims, iArea, iTime, brk, codeKeys, codeLabel, periods, series: [...series.values()], aggSeries, members, dec, aggDec, aBrk, aTime };
}

/* ---- explorer: rendering ---- */

function renderResult() {
  const err = state.error;
  showBox($('#error'), err ? errorText(err) : '');
  const r = state.result;
  $('#result').hidden = !r;
  if (!r || !state.catalogue) return;
  const m = model(), q = state.query;
  const flowName = m.flow ? nameOf(m.flow.name) : q.flow;
  const title = q.breakdown ? t('titleBy', { flow: flowName, dim: dimName(m.flow, q.breakdown) }) : flowName;
  const range = m.periods.length ? (m.periods.length > 1 ? t('titleRange', { from: fmtPeriod(m.periods[0]), to: fmtPeriod(m.periods.at(-1)) }) : fmtPeriod(m.periods[0])) : '';
  $('#result-title').textContent = range ? `${title}${state.lang === 'ar' ? '، ' : ', '}${range}` : title;
  $('#result-meta').replaceChildren(t('resultMeta', { digest: (r.query_digest || '').slice(0, 12), cache: r.cache ?? t('none'),
    leaf: r.hub_leaf != null ? fmtInt(r.hub_leaf) : t('none') }));
  $('#result-meta').title = r.query_digest || '';
  $('#dl-csv').disabled = $('#dl-sdmx').disabled = !m.flow;

  drawChart(m);
  renderMembers(r);
  renderAggregate(m, r);
  renderTable(m, r);
}

function drawChart(m) {
  if (!state.result || !state.catalogue || $('#result').hidden) return;
  m = m || model();
  const svg = $('#chart');
  svg.replaceChildren();
  const ums = new Set(state.result.cells.map((c) => c.unit_mult ?? 0));
  $('#chart-unit').textContent = unitLabel(m.flow, ums.size === 1 ? [...ums][0] : 0);
  svg.setAttribute('aria-label', $('#result-title').textContent);
  if (!m.series.length && !m.aggSeries.length) {
    svg.setAttribute('viewBox', '0 0 600 60'); svg.setAttribute('height', 60);
    svg.append(s('text', { x: 300, y: 34, 'text-anchor': 'middle', class: 'empty' }, t('noData')));
    $('#legend').replaceChildren();
    return;
  }
  const cw = svg.parentElement.clientWidth; // 0 while the explorer view is hidden
  const width = Math.max(480, cw > 0 ? cw - 32 : 900);
  if (m.periods.length > 1) lineChart(svg, m, width); else barChart(svg, m, width);
  renderLegend(m);
}

// "Nice" axis ticks (1, 2, 2.5, 5 × 10^k) covering [lo, hi].
function ticks(lo, hi, count) {
  if (hi === lo) { hi = lo + 1; }
  const raw = (hi - lo) / count, mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((x) => x * mag).find((x) => x >= raw);
  const out = [];
  for (let v = Math.floor(lo / step) * step; v <= Math.ceil(hi / step) * step + step / 2; v += step) out.push(+v.toFixed(10));
  return { values: out, dec: Math.max(0, -Math.floor(Math.log10(step) + 1e-9)) };
}

// Marker shapes tell breakdown categories apart (colour already stands for the member).
function marker(shape, x, y, attrs, ...kids) {
  const r = 3.6;
  switch (shape % 4) {
    case 1: return s('rect', { x: x - r, y: y - r, width: 2 * r, height: 2 * r, ...attrs }, ...kids);
    case 2: return s('path', { d: `M${x},${y - r - 1}L${x + r + 1},${y + r}L${x - r - 1},${y + r}Z`, ...attrs }, ...kids);
    case 3: return s('path', { d: `M${x},${y - r - 1}L${x + r + 1},${y}L${x},${y + r + 1}L${x - r - 1},${y}Z`, ...attrs }, ...kids);
    default: return s('circle', { cx: x, cy: y, r, ...attrs }, ...kids);
  }
}
const DASHES = ['', '2 4', '7 3 2 3', '1 3'];

function lineChart(svg, m, W) {
  const H = 420, pad = { t: 16, r: 24, b: 40, l: 64 };
  // Scale to the visible lines only, so hiding a large series (a regional sum) rescales the rest.
  const visible = [...m.series.filter((sr) => !state.hidden.has(sr.member)), ...(state.hidden.has('aggregate') ? [] : m.aggSeries)];
  const all = visible.flatMap((sr) => [...sr.points.values()]).filter((v) => v != null);
  if (!all.length) all.push(0, 1);
  const lo = Math.min(0, ...all), hi = Math.max(...all);
  const tk = ticks(lo, hi, 6);
  const y0 = tk.values[0], y1 = tk.values.at(-1);
  const n = m.periods.length;
  const X = (i) => pad.l + 12 + (i * (W - pad.l - pad.r - 24)) / (n - 1);
  const Y = (v) => H - pad.b - ((v - y0) / (y1 - y0)) * (H - pad.t - pad.b);
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  svg.setAttribute('height', H);

  const grid = s('g', { class: 'axis' });
  for (const v of tk.values) {
    grid.append(s('line', { x1: pad.l, x2: W - pad.r, y1: Y(v), y2: Y(v), class: v === 0 ? 'zero' : 'grid' }),
      s('text', { x: pad.l - 8, y: Y(v) + 4, 'text-anchor': 'end' }, fmtNum(v, tk.dec)));
  }
  const every = Math.ceil(n / Math.max(2, Math.floor((W - pad.l) / 64)));
  m.periods.forEach((p, i) => {
    if (i % every && i !== n - 1) return;
    grid.append(s('line', { x1: X(i), x2: X(i), y1: H - pad.b, y2: H - pad.b + 5, class: 'tick' }),
      s('text', { x: X(i), y: H - pad.b + 20, 'text-anchor': 'middle' }, fmtPeriod(p)));
  });
  svg.append(grid);

  const draw = (sr, agg) => {
    // Withheld (null) or absent periods break the line instead of being drawn as zero.
    let d = '', pen = false;
    const marks = s('g', { class: 'marks', data: { series: sr.id } });
    m.periods.forEach((p, i) => {
      const v = sr.points.get(p);
      if (v == null) { pen = false; return; }
      d += `${pen ? 'L' : 'M'}${X(i).toFixed(1)},${Y(v).toFixed(1)}`;
      pen = true;
      if (n <= 40) {
        marks.append(marker(sr.codeIdx, X(i), Y(v), { fill: agg ? '#fff' : sr.colour, stroke: sr.colour, 'stroke-width': agg ? 2 : 1 },
          s('title', {}, `${sr.label} · ${fmtPeriod(p)}: ${fmtNum(v, agg ? m.aggDec : m.dec)}`)));
      }
    });
    const line = s('path', { d, class: agg ? 'line agg' : 'line', stroke: sr.colour, fill: 'none',
      'stroke-width': agg ? 3.5 : 1.8, 'stroke-dasharray': agg ? '10 6' : DASHES[sr.codeIdx % DASHES.length] || null,
      'stroke-linejoin': 'round', 'stroke-linecap': 'round', data: { member: sr.member, code: sr.code, series: sr.id } },
    s('title', {}, sr.label));
    const off = state.hidden.has(agg ? 'aggregate' : sr.member);
    for (const el of [line, marks]) el.classList.toggle('off', off);
    svg.append(line, marks);
  };
  m.series.forEach((sr) => draw(sr, false));
  m.aggSeries.forEach((sr) => draw(sr, true)); // on top
}

// One period only: horizontal bars comparing members. In Arabic the chart is mirrored
// (names on the right, bars growing leftwards), as in printed Arabic statistical tables.
function barChart(svg, m, W) {
  const rtl = state.lang === 'ar';
  const period = m.periods[0];
  const codes = m.codeKeys.length ? m.codeKeys : [''];
  const rowOf = (sr) => (sr ? codes.map((ck) => sr.find((x) => x.code === ck)?.points.get(period)) : []);
  const rows = m.members.map((mem) => ({ member: mem, label: memberName(mem), colour: memberColour(mem),
    values: rowOf(m.series.filter((x) => x.member === mem)) }));
  const firstVal = (r) => r.values.find((v) => v != null) ?? -Infinity;
  rows.sort((a, b) => firstVal(b) - firstVal(a));
  if (m.aggSeries.length && !state.hidden.has('aggregate')) rows.unshift({ member: 'aggregate', label: t('legendAggregate'), colour: AGG_COLOUR, values: rowOf(m.aggSeries) });

  const barH = codes.length > 1 ? 11 : 18, gap = 10, band = codes.length * barH + gap;
  const labelW = Math.min(220, W * 0.26), pad = { t: 8, b: 34, near: labelW + 12, far: 64 };
  const H = pad.t + rows.length * band + pad.b;
  const all = rows.flatMap((r) => r.values).filter((v) => v != null);
  const tk = ticks(Math.min(0, ...all), Math.max(0, ...all), 6);
  const v0 = tk.values[0], v1 = tk.values.at(-1);
  const span = W - pad.near - pad.far;
  const L = (v) => pad.near + ((v - v0) / (v1 - v0)) * span; // logical (LTR) position
  const X = (x) => (rtl ? W - x : x);                         // physical position
  const anchor = (side) => ((side === 'near') !== rtl ? 'end' : 'start'); // text hugging the bars' start side
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  svg.setAttribute('height', H);

  const grid = s('g', { class: 'axis' });
  for (const v of tk.values) {
    grid.append(s('line', { x1: X(L(v)), x2: X(L(v)), y1: pad.t, y2: H - pad.b, class: v === 0 ? 'zero' : 'grid' }),
      s('text', { x: X(L(v)), y: H - pad.b + 18, 'text-anchor': 'middle' }, fmtNum(v, tk.dec)));
  }
  svg.append(grid);

  rows.forEach((r, i) => {
    const top = pad.t + i * band + gap / 2, agg = r.member === 'aggregate', dec = agg ? m.aggDec : m.dec;
    svg.append(s('text', { x: X(pad.near - 10), y: top + (codes.length * barH) / 2 + 4, 'text-anchor': anchor('near'),
      class: agg ? 'bar-label agg' : 'bar-label' }, r.label));
    r.values.forEach((v, j) => {
      const y = top + j * barH, title = `${r.label}${codes[j] ? ' · ' + m.codeLabel(codes[j], agg ? m.aBrk : m.brk) : ''}: ${fmtNum(v, dec)}`;
      if (v == null) {
        svg.append(s('text', { x: X(L(0) + 4), y: y + barH / 2 + 4, 'text-anchor': anchor('far'), class: 'withheld' }, `— ${t('withheld')}`));
        return;
      }
      const a = L(Math.min(0, v)), b = L(Math.max(0, v));
      svg.append(s('rect', { x: rtl ? W - b : a, y: y + 1, width: Math.max(1, b - a), height: barH - 2, rx: 2,
        fill: r.colour, 'fill-opacity': [1, 0.6, 0.38, 0.22][j % 4], stroke: r.colour,
        class: agg ? 'bar agg' : 'bar', data: { member: r.member, code: codes[j] } }, s('title', {}, title)));
      svg.append(s('text', { x: X(b + 5), y: y + barH / 2 + 4, 'text-anchor': anchor('far'), class: 'bar-value' }, fmtNum(v, dec)));
    });
  });
}

function renderLegend(m) {
  const legend = $('#legend');
  legend.replaceChildren();
  const isLine = m.periods.length > 1;
  const entry = (member, label, colour, agg) => {
    const li = h('li', {}, h('button', { type: 'button', class: agg ? 'agg' : '', 'aria-pressed': String(!state.hidden.has(member)), data: { legend: member } },
      h('span', { class: 'swatch' + (agg ? ' dashed' : ''), style: `--c:${colour}` }), label));
    const btn = li.firstChild;
    btn.addEventListener('mouseenter', () => focusSeries(member));
    btn.addEventListener('mouseleave', () => focusSeries(null));
    btn.addEventListener('click', () => {
      state.hidden.has(member) ? state.hidden.delete(member) : state.hidden.add(member);
      drawChart();
    });
    return li;
  };
  if (isLine) {
    for (const mem of m.members) legend.append(entry(mem, memberName(mem), memberColour(mem), false));
  }
  if (m.aggSeries.length) legend.append(entry('aggregate', t('legendAggregate'), AGG_COLOUR, true));
  // Key for the breakdown categories: line style + marker in lines, shade in bars.
  if (m.codeKeys.length > 1 || (m.codeKeys[0] && !isLine)) {
    const key = h('li', { class: 'code-key' });
    m.codeKeys.forEach((ck, i) => {
      const sample = s('svg', { width: 34, height: 12, 'aria-hidden': 'true' });
      if (isLine) sample.append(s('line', { x1: 2, x2: 32, y1: 6, y2: 6, stroke: '#444', 'stroke-width': 1.8, 'stroke-dasharray': DASHES[i % DASHES.length] || null }),
        marker(i, 17, 6, { fill: '#444', stroke: '#444' }));
      else sample.append(s('rect', { x: 4, y: 1, width: 26, height: 10, fill: '#444', 'fill-opacity': [1, 0.6, 0.38, 0.22][i % 4], stroke: '#444' }));
      key.append(h('span', {}, sample, m.codeLabel(ck, m.brk)));
    });
    legend.append(key);
  }
  if (isLine) legend.append(h('li', { class: 'hint' }, t('legendHint')));
  legend.hidden = !legend.childElementCount;
}

function focusSeries(member) {
  const svg = $('#chart');
  svg.classList.toggle('focus', !!member);
  for (const el of svg.querySelectorAll('.line, .marks')) {
    const mem = el.dataset.member || el.dataset.series.split('|')[0];
    el.classList.toggle('hl', mem === member);
  }
}

// "rule r7" with only the identifier set in monospace (Arabic words must not be).
function ruleText(id) {
  const [before, after] = t('rule', { r: '\u0000' }).split('\u0000');
  return h('span', { class: 'rule' }, before, h('code', { dir: 'ltr' }, id), after);
}

function renderMembers(r) {
  const counts = { answered: 0, refused: 0, other: 0 };
  const rows = [...r.members].sort((a, b) => byName()(memberName(a.member), memberName(b.member))).map((mm) => {
    counts[mm.state in counts ? mm.state : 'other']++;
    const bits = [];
    if (mm.state === 'answered') {
      bits.push(plural('cellsN', mm.cells));
      if (mm.partial) bits.push(h('strong', { class: 'partial' }, t('partial')));
    } else if (mm.detail) bits.push(h('span', { dir: 'auto', class: 'detail' }, mm.detail));
    if (mm.rule_id) bits.push(ruleText(mm.rule_id));
    const meta = [mm.policy_version && t('policy', { v: mm.policy_version }), mm.elapsed_ms != null && t('ms', { n: fmtInt(mm.elapsed_ms) })].filter(Boolean).join(' · ');
    return h('li', { data: { member: mm.member, state: mm.state } },
      h('span', { class: `badge st-${STATES.includes(mm.state) ? mm.state : 'failed'}` }, t(mm.state)),
      h('span', { class: 'who' }, h('span', { class: 'swatch', style: `background:${memberColour(mm.member)}` }), memberName(mm.member), h('small', {}, mm.member)),
      h('span', { class: 'what' }, interleave(bits, ' · ')),
      h('small', { class: 'meta' }, meta));
  });
  $('#members-summary').textContent = t('summary', { a: fmtInt(counts.answered), r: fmtInt(counts.refused), u: fmtInt(counts.other) });
  $('#members').replaceChildren(...rows);
}

function renderAggregate(m, r) {
  const box = $('#aggregate');
  const agg = r.aggregate;
  box.replaceChildren(h('h3', {}, t('aggTitle')));
  if (!agg) { box.append(h('p', { class: 'meta' }, t('aggNone'))); return; }
  // The method is written by the hub in English.
  box.append(h('p', { class: 'method' }, h('strong', {}, t('aggMethod') + ': '), h('span', { dir: 'ltr', lang: 'en' }, agg.method)));
  const total = r.members.length;
  const head = h('tr', {}, ...m.aBrk.map(([d]) => h('th', {}, dimName(m.flow, d))),
    h('th', {}, t('colPeriod')), h('th', { class: 'num' }, t('colValue')), h('th', {}, t('colCoverage')));
  const rows = agg.cells.map((c) => h('tr', {},
    ...m.aBrk.map(([d, i]) => h('td', {}, codeName(m.flow, d, c.key[i]))),
    h('td', {}, fmtPeriod(c.key[m.aTime])),
    h('td', { class: 'num' }, fmtNum(c.value, m.aggDec)),
    h('td', { class: 'covers' }, t('covers', { n: fmtInt(c.covers.length), m: fmtInt(total) }), ' ',
      h('span', { dir: 'ltr' }, interleave(c.covers.map((code) => h('abbr', { title: memberName(code) }, code)), ', ')))));
  box.append(h('div', { class: 'table-wrap short' }, h('table', { class: 'data compact' }, h('thead', {}, head), h('tbody', {}, rows))));
}

function statusBadges(c) {
  const out = [];
  if (c.obs_status) out.push(h('abbr', { class: `flag obs obs-${c.obs_status}`, title: `${t('obs')} ${c.obs_status}: ${t('obs' + c.obs_status)}` }, c.obs_status));
  if (c.conf_status) out.push(h('abbr', { class: `flag conf conf-${c.conf_status}`, title: `${t('conf')} ${c.conf_status}: ${t('conf' + c.conf_status)}` }, c.conf_status));
  for (const f of c.flags || []) out.push(h('abbr', { class: 'flag note', title: t('flag-' + f) }, f));
  return out;
}

function renderTable(m, r) {
  const ums = new Set(r.cells.map((c) => c.unit_mult ?? 0));
  const oneUm = ums.size === 1 ? [...ums][0] : null;
  const unit = unitLabel(m.flow, oneUm || 0);
  const head = h('tr', {}, h('th', {}, t('colCountry')),
    ...m.brk.map(([d]) => h('th', {}, dimName(m.flow, d))),
    h('th', {}, t('colPeriod')),
    h('th', { class: 'num' }, t('colValue'), unit ? h('small', {}, ` (${unit})`) : ''),
    h('th', {}, t('colFlags')));
  const rank = new Map(m.members.map((c, i) => [c, i]));
  const cells = [...r.cells].sort((a, b) => (rank.get(a.key[m.iArea]) - rank.get(b.key[m.iArea]))
    || (m.codeKeys.indexOf(m.brk.map(([, i]) => a.key[i]).join('|')) - m.codeKeys.indexOf(m.brk.map(([, i]) => b.key[i]).join('|')))
    || String(a.key[m.iTime]).localeCompare(String(b.key[m.iTime])));
  const frag = document.createDocumentFragment();
  for (const c of cells) {
    const mem = c.key[m.iArea];
    frag.append(h('tr', { data: { member: mem } },
      h('td', {}, memberName(mem)),
      ...m.brk.map(([d, i]) => h('td', {}, codeName(m.flow, d, c.key[i]))),
      h('td', {}, fmtPeriod(c.key[m.iTime])),
      c.value == null
        ? h('td', { class: 'num withheld', title: t('withheld') }, '—')
        : h('td', { class: 'num' }, fmtNum(c.value, m.dec), oneUm == null && c.unit_mult ? h('small', {}, ` (${unitLabel(null, c.unit_mult)})`) : ''),
      h('td', { class: 'flags' }, statusBadges(c))));
  }
  if (!cells.length) frag.append(h('tr', {}, h('td', { colspan: 4 + m.brk.length, class: 'meta' }, t('noData'))));
  $('#table').replaceChildren(h('thead', {}, head), h('tbody', {}, frag));
}

/* ---- downloads ---- */

// The same query as SDMX REST: key = one part per catalogue dimension, REF_AREA first.
function sdmxPath(q, format) {
  const flow = flowById(q.flow);
  const key = flow.dimensions.filter((d) => d.id !== 'TIME_PERIOD').map((d) => {
    if (d.id === 'REF_AREA') return q.members.join('+');
    if (d.id === q.breakdown) return q.codes.join('+');
    return d.total || ''; // no total code: wildcard
  }).join('.');
  const p = new URLSearchParams();
  if (q.start) p.set('startPeriod', q.start);
  if (q.end) p.set('endPeriod', q.end);
  p.set('format', format);
  return `sdmx/data/${encodeURIComponent(state.catalogue.agency || 'ALO')},${encodeURIComponent(flow.id)},latest/${key}?${p}`;
}

async function download(format, ext) {
  const q = state.query;
  if (!q || !flowById(q.flow)) return;
  try {
    const blob = await (await api(sdmxPath(q, format))).blob();
    const a = h('a', { href: URL.createObjectURL(blob), download: `${state.catalogue.agency || 'ALO'}_${q.flow}_${q.start || 'all'}-${q.end || 'all'}.${ext}` });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 60_000);
  } catch (err) {
    showBox($('#error'), errorText(err));
  }
}

/* ---- transparency ---- */

async function loadReleases() {
  const seq = ++state.relSeq;
  state.relBusy = true;
  showBox($('#rel-status'), t('loadingReleases'), 'busy');
  await catalogueReady.catch(() => {});
  const p = new URLSearchParams({ limit: '200' });
  if (state.relMember) p.set('member', state.relMember);
  try {
    const data = await (await api('api/v1/releases?' + p)).json();
    if (seq !== state.relSeq) return;
    state.releases = data; state.relError = null;
  } catch (err) {
    if (seq !== state.relSeq) return;
    state.releases = null; state.relError = err;
  }
  state.relBusy = false;
  showBox($('#rel-status'), '');
  renderReleases();
  markReady();
}

function renderReleases() {
  const sel = $('#rel-member');
  sel.replaceChildren(h('option', { value: '' }, t('allMembers')),
    ...sortedMembers().map((mm) => h('option', { value: mm.code, selected: mm.code === state.relMember }, nameOf(mm.name))));
  showBox($('#rel-error'), state.relError ? errorText(state.relError) : '');
  const data = state.releases;
  const log = data?.hub_log;
  $('#checkpoint').textContent = log?.checkpoint || '';
  $('#checkpoint-explain').replaceChildren(...t('checkpointExplain', { origin: log?.origin || '—', size: log ? fmtInt(log.size) : '—' })
    .split(/(tabadul-audit verify)/).map((x, i) => (i % 2 ? h('code', { dir: 'ltr' }, x) : x)));
  const table = $('#releases');
  if (!data) { table.replaceChildren(); return; }

  const head = h('tr', {}, ...['colTime', 'colOperator', 'colDataflow', 'colDecision', 'colMemberLog', 'colHubLeaf'].map((k) => h('th', {}, t(k))));
  const body = h('tbody');
  // Grouped by member (alphabetical in the page's language); newest first inside a group.
  const groups = new Map();
  for (const rel of [...data.releases].sort((a, b) => String(b.time).localeCompare(String(a.time)))) {
    if (!groups.has(rel.member)) groups.set(rel.member, []);
    groups.get(rel.member).push(rel);
  }
  const order = [...groups.keys()].sort((a, b) => byName()(memberName(a), memberName(b)));
  for (const mem of order) {
    const list = groups.get(mem);
    body.append(h('tr', { class: 'group', data: { group: mem } }, h('th', { colspan: 6 },
      h('span', { class: 'swatch', style: `background:${memberColour(mem)}` }), memberName(mem), ' ', h('small', {}, `${mem} · ${plural('releasesN', list.length)}`))));
    for (const rel of list) {
      const flow = flowById(rel.dataflow);
      body.append(h('tr', { data: { member: rel.member, decision: rel.decision } },
        h('td', { class: 'nowrap' }, h('time', { datetime: rel.time }, fmtTime(rel.time))),
        h('td', {}, h('code', { dir: 'ltr', class: 'ident' }, rel.operator)),
        h('td', {}, flow ? nameOf(flow.name) : rel.dataflow, ' ', h('small', { dir: 'ltr' }, rel.dataflow)),
        h('td', {}, h('span', { class: `badge st-${STATES.includes(rel.decision) ? rel.decision : 'failed'}` }, t(rel.decision)),
          rel.rule_id ? [' ', ruleText(rel.rule_id)] : ''),
        h('td', { class: 'nowrap', title: rel.leaf_hash || '' }, t('leafOf', { leaf: fmtInt(rel.member_leaf), size: fmtInt(rel.member_tree_size) }),
          ' ', verifyButton(rel)),
        h('td', { class: 'nowrap' }, t('leafN', { leaf: fmtInt(rel.hub_leaf) }))));
    }
  }
  if (!order.length) body.append(h('tr', {}, h('td', { colspan: 6, class: 'meta' }, t('noReleases'))));
  table.replaceChildren(h('thead', {}, head), body);
}

// Asks the hub for the member's own proof of a release (its signed
// checkpoint and the leaf's inclusion proof, checked by the hub against the
// member's log key) and shows the checkpoint.
function verifyButton(rel) {
  const btn = h('button', { type: 'button', class: 'linkish', data: { verify: `${rel.member}/${rel.member_leaf}` } }, t('verify'));
  btn.addEventListener('click', async () => {
    btn.disabled = true;
    btn.textContent = t('verifying');
    try {
      const proof = await (await api(`api/v1/releases/${encodeURIComponent(rel.member)}/${encodeURIComponent(rel.member_leaf)}/proof`)).json();
      btn.replaceWith(h('details', { class: 'proof', data: { verified: String(proof.verified) } },
        h('summary', {}, '✓ ', t('verified', { size: fmtInt(proof.member_tree_size) })),
        h('pre', { dir: 'ltr' }, proof.member_checkpoint)));
    } catch (err) {
      btn.replaceWith(h('span', { class: 'error' }, errorText(err)));
    }
  });
  return btn;
}

/* ---- migration corridors ---- */

const SIDES = ['placements', 'permits', 'visas', 'stock'];

function renderCorridorControls(wanted = {}) {
  const members = sortedMembers();
  if (!members.length) return;
  // An explicit choice (a shared link), else what is selected, else EGY → SAU.
  const pick = (sel, explicit, usual, fallback) => {
    const current = explicit || $(sel).value || usual;
    const chosen = members.some((m) => m.code === current) ? current : fallback;
    $(sel).replaceChildren(...members.map((m) => h('option', { value: m.code, selected: m.code === chosen }, nameOf(m.name))));
  };
  pick('#cor-origin', wanted.origin, 'EGY', members[0].code);
  pick('#cor-destination', wanted.destination, 'SAU', members[members.length > 1 ? 1 : 0].code);
}

async function runCorridor(e) {
  e?.preventDefault();
  const origin = $('#cor-origin').value, destination = $('#cor-destination').value;
  showBox($('#cor-error'), '');
  if (!origin || origin === destination) { showBox($('#cor-error'), t('corSame')); return; }
  const p = new URLSearchParams();
  const digits = (v) => v.trim().replace(/[٠-٩]/g, (d) => String(d.charCodeAt(0) - 0x0660));
  const start = digits($('#cor-start').value), end = digits($('#cor-end').value);
  if (start) p.set('start_period', start);
  if (end) p.set('end_period', end);
  const seq = ++state.corSeq;
  showBox($('#cor-status'), t('loadingCorridor'), 'busy');
  try {
    const data = await (await api(`api/v1/corridors/${encodeURIComponent(origin)}/${encodeURIComponent(destination)}?${p}`)).json();
    if (seq !== state.corSeq) return;
    state.corridor = data;
  } catch (err) {
    if (seq !== state.corSeq) return;
    state.corridor = null;
    showBox($('#cor-error'), errorText(err));
  }
  showBox($('#cor-status'), '');
  renderCorridor();
  markReady();
}

function renderCorridor() {
  const c = state.corridor;
  $('#cor-result').hidden = !c;
  if (!c) return;
  $('#cor-heading').textContent = t('corHeading', { origin: memberName(c.origin), destination: memberName(c.destination) });
  $('#cor-sides').replaceChildren(...SIDES.map((name) => {
    const side = c.sides[name];
    const st = STATES.includes(side.state) ? side.state : 'failed';
    const flow = flowById(side.dataflow);
    return h('li', { data: { side: name, state: side.state } },
      h('span', { class: `badge st-${st}` }, t(st)), h('strong', {}, t(`side_${name}`)),
      h('span', { class: 'what' }, `${memberName(side.member)} · ${flow ? nameOf(flow.name) : side.dataflow}`),
      side.detail && side.state !== 'answered' ? h('p', { class: 'meta' }, side.detail) : '');
  }));
  const head = h('tr', {}, h('th', {}, t('colPeriod')), ...SIDES.map((n) => h('th', {}, t(`side_${n}`))), h('th', {}, t('asym_permits')), h('th', {}, t('asym_visas')));
  const cell = (name, v) => {
    if (v !== null && v !== undefined) return h('td', { class: 'num' }, fmtInt(v));
    const refused = c.sides[name].state !== 'answered';
    return h('td', { class: 'num meta', data: { missing: refused ? 'refused' : 'no-figure' } }, t(refused ? 'notGranted' : 'noCover'));
  };
  const ratio = (v) => h('td', { class: 'num' }, v === null || v === undefined ? t('none') : numFmt(3, 3).format(v));
  const rows = c.rows.map((r) => h('tr', { data: { period: r.period } }, h('td', {}, fmtPeriod(r.period)),
    ...SIDES.map((n) => cell(n, r[n])), ratio(r.asymmetry.permits), ratio(r.asymmetry.visas)));
  if (!rows.length) rows.push(h('tr', {}, h('td', { colspan: 7, class: 'meta' }, t('noData'))));
  $('#cor-table').replaceChildren(h('thead', {}, head), h('tbody', {}, ...rows));
}

/* ---- start-up ---- */

let catalogueReady = Promise.resolve();

async function loadCatalogue() {
  catalogueReady = (async () => {
    showBox($('#status'), t('loadingCatalogue'), 'busy');
    try {
      state.catalogue = await (await api('api/v1/catalogue')).json();
      state.catalogueError = null;
    } catch (err) {
      state.catalogueError = err;
      showBox($('#status'), '');
      showBox($('#error'), errorText(err));
      markReady(); // nothing more will happen until a token is entered
      throw err;
    }
    showBox($('#status'), '');
    showBox($('#error'), '');
    const params = new URLSearchParams(location.search);
    state.form = formFromUrl(params);
    applyLanguage();
    renderControls();
    if (document.body.dataset.ready !== '1') document.body.dataset.ready = 'catalogue';
    if (params.get('run') === '1') runQuery();
    if (state.view === 'transparency') renderReleases();
    renderCorridorControls();
    // A shared corridor link: ?corridor=EGY,SAU
    const [origin, destination] = (params.get('corridor') || '').split(',');
    if (origin && destination) {
      renderCorridorControls({ origin, destination });
      runCorridor();
    }
  })();
  return catalogueReady.catch(() => {});
}

function init() {
  const params = new URLSearchParams(location.search);
  state.lang = params.get('lang') === 'en' ? 'en' : 'ar';
  const hash = parseHash();
  if (hash.token) { state.token = hash.token; sessionStorage.setItem(TOKEN_KEY, hash.token); }
  state.view = hash.view || 'explorer';
  updateUrl(); // drops the token from the address bar

  $('#lang-toggle').addEventListener('click', switchLanguage);
  $('#token-form').addEventListener('submit', (e) => { e.preventDefault(); setToken($('#token-input').value); });
  $('#token-clear').addEventListener('click', () => setToken(''));
  $('#dl-csv').addEventListener('click', () => download('sdmx-csv', 'csv'));
  $('#dl-sdmx').addEventListener('click', () => download('genericdata', 'xml'));
  $('#rel-member').addEventListener('change', (e) => { state.relMember = e.target.value; loadReleases(); });
  $('#rel-refresh').addEventListener('click', loadReleases);
  $('#cor-form').addEventListener('submit', runCorridor);
  window.addEventListener('hashchange', () => {
    const hh = parseHash();
    state.view = hh.view || state.view;
    if (hh.token) setToken(hh.token);
    updateUrl(); // also drops a token from the address bar
    showView();
  });
  let resizeTimer;
  window.addEventListener('resize', () => { clearTimeout(resizeTimer); resizeTimer = setTimeout(() => drawChart(), 150); });
  wireControls();

  loadCatalogue(); // first: loadReleases() waits for it
  loadWhoami();
  showView();
}

init();
