// PulseVault web console: sign in with a JWT, browse your videos (GET /media/videos),
// upload with tus (pause, resume, resume after a reload), finalize, watch the
// transcode, play with hls.js or dash.js from signed URLs, share a signed link.
// Plain browser JavaScript, no build step.
'use strict';

(() => {
  const TOKEN_KEY = 'pulsevault.token';
  const VIDEO_KEY = 'pulsevault.videoId';
  const ORIGINAL_KEY = 'pulsevault.original';
  // Several chunks per large file (each PATCH must arrive within tus-upload's read_timeout).
  const CHUNK_SIZE = 16 * 1024 * 1024;
  const POLL_MS = 1500;
  // Re-sign a URL when it has less than this left (a metadata poll, a player restart).
  const RESIGN_MARGIN_MS = 15000;
  const LIBRARY_PAGE = 12;
  const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

  const $ = (id) => document.getElementById(id);
  const ui = {
    alert: $('alert'),
    identity: $('identity'),
    signOut: $('sign-out'),
    signIn: $('sign-in'),
    signInForm: $('sign-in-form'),
    token: $('token'),
    upload: $('upload'),
    uploadForm: $('upload-form'),
    file: $('file'),
    title: $('title'),
    uploadStart: $('upload-start'),
    uploadPause: $('upload-pause'),
    uploadResume: $('upload-resume'),
    uploadProgress: $('upload-progress'),
    uploadPercent: $('upload-percent'),
    uploadStatus: $('upload-status'),
    library: $('library'),
    libraryList: $('library-list'),
    libraryEmpty: $('library-empty'),
    libraryMore: $('library-more'),
    libraryRefresh: $('library-refresh'),
    video: $('video'),
    back: $('back'),
    videoTitle: $('video-title'),
    openForm: $('open-form'),
    videoId: $('video-id'),
    videoStatus: $('video-status'),
    videoDuration: $('video-duration'),
    videoSize: $('video-size'),
    videoUploaded: $('video-uploaded'),
    videoRenditions: $('video-renditions'),
    share: $('share'),
    edit: $('edit'),
    editForm: $('edit-form'),
    editTitle: $('edit-title'),
    editDescription: $('edit-description'),
    editCancel: $('edit-cancel'),
    remove: $('delete'),
    deleteForm: $('delete-form'),
    deleteReason: $('delete-reason'),
    deleteCancel: $('delete-cancel'),
    videoRetention: $('video-retention'),
    videoHold: $('video-hold'),
    shareBox: $('share-box'),
    shareUrl: $('share-url'),
    shareExpiry: $('share-expiry'),
    transcodeProgress: $('transcode-progress'),
    transcodePercent: $('transcode-percent'),
    playHls: $('play-hls'),
    playDash: $('play-dash'),
    rendition: $('rendition'),
    videoElement: $('video-element'),
    playerStatus: $('player-status'),
    scrub: $('scrub'),
    scrubThumb: $('scrub-thumb'),
  };

  // ---------- messages ----------

  function showAlert(message) {
    ui.alert.textContent = message;
    ui.alert.hidden = false;
  }
  function clearAlert() {
    ui.alert.hidden = true;
    ui.alert.textContent = '';
  }
  /** A fraction fills the bar; null makes it indeterminate (working, no figure yet). */
  function setMeter(progress, output, fraction) {
    if (fraction === null) {
      progress.removeAttribute('value');
      output.value = '…';
      return;
    }
    const percent = Math.max(0, Math.min(100, Math.floor(fraction * 100)));
    progress.value = percent;
    output.value = `${percent} %`;
  }

  /** 75.2 → `1:15`; 3725 → `1:02:05`. */
  function formatDuration(seconds) {
    if (typeof seconds !== 'number' || !Number.isFinite(seconds)) return '–';
    const s = Math.round(seconds);
    const hms = [Math.floor(s / 3600), Math.floor((s % 3600) / 60), s % 60];
    const [h, m, sec] = hms.map((n) => String(n).padStart(2, '0'));
    return hms[0] > 0 ? `${hms[0]}:${m}:${sec}` : `${hms[1]}:${sec}`;
  }
  function formatSize(bytes) {
    if (typeof bytes !== 'number') return '–';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let n = bytes;
    let i = 0;
    for (; n >= 1024 && i < units.length - 1; i++) n /= 1024;
    return `${n.toFixed(i === 0 || n >= 100 ? 0 : 1)} ${units[i]}`;
  }
  const formatWhen = (iso) => (iso ? new Date(iso).toLocaleString([], { dateStyle: 'medium', timeStyle: 'short' }) : '–');

  // ---------- sign-in (the JWT lives in sessionStorage: this tab only) ----------

  function readClaims(jwt) {
    const parts = jwt.split('.');
    if (parts.length !== 3) return null;
    try {
      return JSON.parse(atob(parts[1].replace(/-/g, '+').replace(/_/g, '/')));
    } catch {
      return null;
    }
  }
  const currentToken = () => sessionStorage.getItem(TOKEN_KEY);

  function showSignedIn() {
    const jwt = currentToken();
    const claims = jwt && readClaims(jwt);
    const signedIn = Boolean(claims);
    ui.signIn.hidden = signedIn;
    ui.upload.hidden = !signedIn;
    ui.library.hidden = !signedIn;
    ui.identity.hidden = !signedIn;
    ui.signOut.hidden = !signedIn;
    if (!signedIn) {
      ui.video.hidden = true;
      ui.libraryList.replaceChildren();
      return;
    }
    const roles = Object.values(claims).find((v) => Array.isArray(v) && v.every((r) => typeof r === 'string'));
    // With its date: a development token lasts 12 h, so a bare time is often tomorrow's.
    const until = claims.exp ? formatWhen(new Date(claims.exp * 1000).toISOString()) : 'no expiry';
    ui.identity.textContent = `${roles ? `${roles.join(', ')} · ` : ''}until ${until}`;
    ui.identity.title = `Signed in${roles ? ` as ${roles.join(', ')}` : ''}, until ${until}`;
    void loadLibrary(true);
  }

  function signIn(jwt) {
    const claims = readClaims(jwt);
    if (!claims) return showAlert('That is not a JWT (three base64url parts).');
    if (claims.exp && claims.exp * 1000 <= Date.now()) return showAlert('That token has expired.');
    sessionStorage.setItem(TOKEN_KEY, jwt);
    ui.token.value = '';
    clearAlert();
    showSignedIn();
  }

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    stopWatching();
    destroyPlayer();
    showSignedIn();
    if (message) showAlert(message);
  }

  // ---------- API ----------

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function api(path, options = {}) {
    const headers = { Accept: 'application/json', ...(options.headers || {}) };
    if (options.auth !== false) headers.Authorization = `Bearer ${currentToken()}`;
    let body;
    if (options.json !== undefined) {
      headers['Content-Type'] = 'application/json';
      body = JSON.stringify(options.json);
    }
    const res = await fetch(path, { method: options.method || 'GET', headers, body, cache: 'no-store' });
    // The ETag an edit quotes in If-Match (GET …/metadata, PATCH answer it).
    if (options.onEtag) options.onEtag(res.headers.get('etag'));
    const data = await res.json().catch(() => null);
    if (!res.ok) {
      if (res.status === 401 && options.auth !== false) signOut('Your sign-in is no longer valid. Sign in again.');
      throw new ApiError(res.status, data?.error ?? 'http_error', data?.message ?? `${res.status} ${res.statusText}`);
    }
    return data;
  }

  /** Signed URLs, reused until shortly before they expire. */
  const signed = new Map();
  async function signedUrl(videoId, path) {
    const key = `${videoId}/${path}`;
    const cached = signed.get(key);
    if (cached && cached.expiresAt - Date.now() > RESIGN_MARGIN_MS) return cached.url;
    const answer = await api('/media/sign', { method: 'POST', json: { videoId, path } });
    const expiresAt = answer.expiresAt ? Date.parse(answer.expiresAt) : Date.now() + (answer.expiresIn ?? 60) * 1000;
    signed.set(key, { url: answer.url, expiresAt, signedAt: Date.now() });
    return answer.url;
  }

  // ---------- library (GET /media/videos: the caller's own videos, every video for an admin) ----------

  let libraryCursor = null;

  async function loadLibrary(fromStart) {
    if (fromStart) libraryCursor = null;
    const query = new URLSearchParams({ limit: String(LIBRARY_PAGE) });
    if (libraryCursor) query.set('cursor', libraryCursor);
    let page;
    try {
      page = await api(`/media/videos?${query}`);
    } catch (err) {
      if (err.status !== 401) showAlert(`Cannot list the videos: ${err.message}`);
      return;
    }
    if (fromStart) ui.libraryList.replaceChildren();
    ui.libraryList.append(...page.videos.map(libraryItem));
    libraryCursor = page.nextCursor;
    ui.libraryMore.hidden = !page.nextCursor;
    ui.libraryEmpty.hidden = ui.libraryList.children.length > 0;
  }

  function statusText(video) {
    if (video.status === 'transcoding') return video.progress ? `transcoding ${video.progress} %` : 'transcoding';
    return video.status;
  }

  function libraryItem(video) {
    const item = document.createElement('li');
    const open = document.createElement('button');
    open.type = 'button';
    open.className = 'card';
    open.dataset.videoId = video.videoId;
    const frame = document.createElement('span');
    frame.className = 'poster';
    if (video.poster) {
      const img = document.createElement('img');
      img.alt = '';
      img.loading = 'lazy';
      frame.append(img);
      // The poster is a media file like any other: it opens only through a signed URL.
      void signedUrl(video.videoId, video.poster).then((url) => (img.src = url)).catch(() => img.remove());
    }
    const duration = document.createElement('span');
    duration.className = 'duration';
    duration.textContent = formatDuration(video.duration);
    frame.append(duration);
    const title = document.createElement('span');
    title.className = 'card-title';
    title.textContent = video.title || 'Untitled video';
    const facts = document.createElement('span');
    facts.className = 'card-facts';
    const status = document.createElement('span');
    status.className = `badge badge-${video.status}`;
    status.textContent = statusText(video);
    facts.append(status, ` ${video.renditions.length ? video.renditions.join(' · ') : 'no renditions yet'}`);
    const when = document.createElement('span');
    when.className = 'card-when';
    when.textContent = formatWhen(video.uploadedAt);
    open.append(frame, title, facts, when);
    open.addEventListener('click', () => {
      clearAlert();
      watch(video.videoId, null, video);
      ui.video.scrollIntoView({ block: 'start' });
    });
    item.append(open);
    return item;
  }

  // ---------- upload (tus) ----------

  let upload = null;

  /**
   * tus remembers unfinished uploads in localStorage under a fingerprint. Its
   * default fingerprint contains the file name (possibly PHI) in clear: ours is
   * a SHA-256 of the same facts.
   */
  async function fingerprint(file) {
    const facts = `${file.name}\n${file.type}\n${file.size}\n${file.lastModified}\n${location.origin}`;
    if (!crypto.subtle) return `pulsevault-${file.size}-${file.lastModified}`;
    const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(facts));
    return `pulsevault-${Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join('')}`;
  }

  function setUploadButtons(state) {
    ui.uploadStart.disabled = state === 'running' || state === 'paused' || state === 'finalizing';
    ui.uploadPause.disabled = state !== 'running';
    ui.uploadResume.disabled = state !== 'paused';
    ui.file.disabled = state === 'running' || state === 'paused' || state === 'finalizing';
  }

  async function startUpload() {
    const file = ui.file.files[0];
    if (!file) return showAlert('Choose a file first.');
    clearAlert();
    setMeter(ui.uploadProgress, ui.uploadPercent, 0);
    const title = ui.title.value.trim();
    upload = new tus.Upload(file, {
      endpoint: new URL('/uploads', location.href).href,
      chunkSize: CHUNK_SIZE,
      retryDelays: [0, 1000, 3000, 5000, 10000],
      headers: { Authorization: `Bearer ${currentToken()}` },
      metadata: { filetype: file.type || 'application/octet-stream' },
      fingerprint,
      removeFingerprintOnSuccess: true,
      onProgress(sent, total) {
        setMeter(ui.uploadProgress, ui.uploadPercent, total ? sent / total : 0);
      },
      onError(err) {
        setUploadButtons('idle');
        const status = err.originalResponse ? err.originalResponse.getStatus() : 0;
        if (status === 401) return signOut('Your sign-in is no longer valid. Sign in again, then upload the file again to resume.');
        ui.uploadStatus.textContent = '';
        showAlert(`Upload failed${status ? ` (${status})` : ''}: ${uploadErrorMessage(err)}`);
      },
      onSuccess() {
        setMeter(ui.uploadProgress, ui.uploadPercent, 1);
        void finalize(upload.url, file, title);
      },
    });
    const previous = await upload.findPreviousUploads();
    if (previous.length > 0) {
      upload.resumeFromPreviousUpload(previous[0]);
      ui.uploadStatus.textContent = 'Resuming an unfinished upload of this file…';
    } else {
      ui.uploadStatus.textContent = 'Uploading…';
    }
    setUploadButtons('running');
    upload.start();
  }

  function uploadErrorMessage(err) {
    const body = err.originalResponse ? err.originalResponse.getBody() : '';
    try {
      return JSON.parse(body).message;
    } catch {
      return body ? body.trim().slice(0, 200) : err.message;
    }
  }

  function pauseUpload() {
    if (!upload) return;
    void upload.abort(); // keeps the upload on the server: Resume continues from its offset
    setUploadButtons('paused');
    ui.uploadStatus.textContent = 'Paused.';
  }

  function resumeUpload() {
    if (!upload) return;
    setUploadButtons('running');
    ui.uploadStatus.textContent = 'Uploading…';
    upload.start();
  }

  async function finalize(uploadUrl, file, title) {
    setUploadButtons('finalizing');
    ui.uploadStatus.textContent = 'Upload complete. Finalizing…';
    const uploadId = new URL(uploadUrl, location.href).pathname.split('/').pop();
    try {
      // The spec's body names the user; the server checks it against the JWT's `sub`.
      const body = { uploadId, filename: file.name, userId: readClaims(currentToken())?.sub };
      if (title) body.metadata = { title };
      const answer = await api('/uploads/finalize', { method: 'POST', json: body });
      ui.uploadStatus.textContent = `Stored with checksum ${String(answer.checksum ?? '').slice(0, 16)}…`;
      ui.uploadForm.reset();
      watch(answer.videoId, answer.original, { title });
      void loadLibrary(true);
    } catch (err) {
      ui.uploadStatus.textContent = '';
      showAlert(`Finalize failed: ${err.message}`);
    } finally {
      setUploadButtons('idle');
    }
  }

  // ---------- status (metadata polled through a signed URL) ----------

  let watching = null; // { videoId, timer, outputs, preview }

  function stopWatching() {
    if (watching?.timer) clearTimeout(watching.timer);
    watching = null;
  }

  function closeVideo() {
    stopWatching();
    destroyPlayer();
    sessionStorage.removeItem(VIDEO_KEY);
    ui.video.hidden = true;
  }

  /** Open the detail view of `videoId`; `known` is what the library or the upload already says of it. */
  function watch(videoId, original, known = {}) {
    stopWatching();
    destroyPlayer();
    ui.video.hidden = false;
    ui.videoTitle.textContent = known.title || 'Untitled video';
    ui.shareBox.hidden = true;
    ui.editForm.hidden = true;
    ui.deleteForm.hidden = true;
    for (const b of [ui.share, ui.edit, ui.remove]) b.disabled = false;
    ui.videoElement.removeAttribute('poster');
    for (const dd of [ui.videoDuration, ui.videoSize, ui.videoUploaded]) dd.textContent = '–';
    sessionStorage.setItem(VIDEO_KEY, videoId);
    // Finalize names the original (`original.mov`, …); remember it across a reload of the page.
    if (original) sessionStorage.setItem(`${ORIGINAL_KEY}.${videoId}`, original);
    else original = sessionStorage.getItem(`${ORIGINAL_KEY}.${videoId}`);
    ui.videoId.value = videoId;
    ui.videoStatus.textContent = 'loading…';
    ui.videoRenditions.textContent = '–';
    setMeter(ui.transcodeProgress, ui.transcodePercent, null);
    ui.playHls.disabled = true;
    ui.playDash.disabled = true;
    ui.playerStatus.textContent = 'Not playable yet.';
    ui.scrub.disabled = true;
    ui.scrubThumb.hidden = true;
    watching = { videoId, original, timer: null, outputs: null, preview: false, thumbnails: null, etag: null, meta: null };
    void poll(watching);
  }

  /**
   * The metadata view opens with a token for any existing file of the video, and
   * which files exist depends on its state: the original until the transcode is
   * done (its extension follows the container; finalize names it), then the
   * playlists. The first path that signs is kept for the video.
   */
  const statusPaths = new Map();
  async function statusUrl(w) {
    const known = statusPaths.get(w.videoId);
    if (known) return signedUrl(w.videoId, known);
    const candidates = [...new Set([w.original, 'original.mp4', 'hls/master.m3u8'].filter(Boolean))];
    for (const path of candidates) {
      try {
        const url = await signedUrl(w.videoId, path);
        statusPaths.set(w.videoId, path);
        return url;
      } catch (err) {
        if (err.status !== 404 && err.status !== 400) throw err;
      }
    }
    throw new ApiError(404, 'not_found', 'no file of this video can be signed yet');
  }

  /** `/media/videos/<id>/metadata|renditions` with the token of a file of the video. */
  async function viewUrl(w, view) {
    const file = new URL(await statusUrl(w), location.href);
    const url = new URL(`/media/videos/${encodeURIComponent(w.videoId)}/${view}`, file);
    url.searchParams.set('token', file.searchParams.get('token') ?? '');
    return url.href;
  }

  async function poll(w) {
    let meta;
    try {
      // With the Bearer too: the owner (or an admin) also gets the title.
      meta = await api(await viewUrl(w, 'metadata'), { onEtag: (etag) => (w.etag = etag) });
    } catch (err) {
      if (watching !== w) return;
      if (err.status === 410) return showDeleted(w);
      ui.videoStatus.textContent = 'unavailable';
      if (err.status === 404) return showAlert('No video with that ID.');
      if (err.status === 401 || err.status === 403) return showAlert(`Not allowed to view this video: ${err.message}`);
      w.timer = setTimeout(() => void poll(w), POLL_MS * 2);
      return;
    }
    if (watching !== w) return;
    w.meta = meta;
    render(meta);
    if (meta.status === 'transcoded') return void showPlayer(w, meta);
    if (meta.status === 'failed') return showAlert('Transcoding failed. An operator can requeue it (pulsevault requeue).');
    // A long video plays early: its preview rung is published before the full ladder (which takes over, see showPlayer).
    if (meta.preview && !w.outputs) void showPlayer(w, { outputs: meta.preview, preview: true, renditions: meta.renditionsReady });
    w.timer = setTimeout(() => void poll(w), POLL_MS);
  }

  /**
   * The bar works from finalize on: stored and queued (no figure yet) it is indeterminate,
   * as is a transcode before its first progress figure; then it fills.
   */
  function render(meta) {
    const progress = Number(meta.progress ?? 0);
    const labels = { uploaded: 'stored, waiting for the transcoder', queued: 'queued for transcoding' };
    const preview = meta.preview ? ' · preview ready' : '';
    ui.videoStatus.textContent = meta.status === 'transcoding' ? `transcoding (${progress > 0 ? `${progress} %` : 'starting'})${preview}` : labels[meta.status] ?? meta.status;
    const fraction = meta.status === 'transcoded' ? 1 : meta.status === 'failed' ? 0 : meta.status === 'transcoding' && progress > 0 ? progress / 100 : null;
    setMeter(ui.transcodeProgress, ui.transcodePercent, fraction);
    if (typeof meta.metadata?.title === 'string' && meta.metadata.title) ui.videoTitle.textContent = meta.metadata.title;
    ui.videoDuration.textContent = formatDuration(meta.duration);
    ui.videoUploaded.textContent = formatWhen(meta.uploadedAt);
    ui.videoRetention.textContent = meta.retainUntil ? formatWhen(meta.retainUntil) : 'until deleted';
    ui.videoHold.textContent = meta.legalHold ? `held since ${formatWhen(meta.legalHold.since)} (${meta.legalHold.reason})` : 'none';
    // A held video cannot be deleted (409 legal_hold): say so on the button.
    ui.remove.disabled = Boolean(meta.legalHold);
    ui.remove.title = meta.legalHold ? 'Under a legal hold: an admin must release it first' : '';
    if (typeof meta.size === 'number') ui.videoSize.textContent = formatSize(meta.size);
    if (Array.isArray(meta.renditions) && meta.renditions.length > 0) ui.videoRenditions.textContent = meta.renditions.join(', ');
    if (meta.poster && watching && !ui.videoElement.poster) {
      const w = watching;
      void signedUrl(w.videoId, meta.poster).then((url) => watching === w && (ui.videoElement.poster = url)).catch(() => {});
    }
  }

  // ---------- edit and delete (PATCH/DELETE /media/videos/<id>, docs/api.md "Edit, hold and delete") ----------

  function openEdit() {
    const w = watching;
    if (!w?.meta) return;
    ui.deleteForm.hidden = true;
    ui.editTitle.value = typeof w.meta.metadata?.title === 'string' ? w.meta.metadata.title : '';
    ui.editDescription.value = typeof w.meta.metadata?.description === 'string' ? w.meta.metadata.description : '';
    ui.editForm.hidden = false;
    ui.editTitle.focus();
  }

  async function saveEdit() {
    const w = watching;
    if (!w) return;
    try {
      const meta = await api(`/media/videos/${encodeURIComponent(w.videoId)}`, {
        method: 'PATCH',
        headers: { 'If-Match': w.etag ?? '' },
        json: { title: ui.editTitle.value, description: ui.editDescription.value },
        onEtag: (etag) => (w.etag = etag),
      });
      if (watching !== w) return;
      w.meta = meta;
      render(meta);
      ui.editForm.hidden = true;
    } catch (err) {
      if (err.status === 412) {
        showAlert('Someone changed this video meanwhile: its details are reloaded, edit again.');
        return void poll(w);
      }
      if (err.status === 410) return showDeleted(w);
      showAlert(`Cannot save: ${err.message}`);
    }
  }

  async function confirmDelete() {
    const w = watching;
    if (!w || !ui.deleteReason.value) return;
    try {
      await api(`/media/videos/${encodeURIComponent(w.videoId)}?reason=${encodeURIComponent(ui.deleteReason.value)}`, { method: 'DELETE' });
      if (watching === w) showDeleted(w);
    } catch (err) {
      showAlert(err.code === 'legal_hold' ? 'This video is under a legal hold and cannot be deleted.' : `Cannot delete: ${err.message}`);
    }
  }

  /** The video is gone (410 video_deleted, or our own DELETE): the player stops, nothing is offered. */
  function showDeleted(w) {
    if (w.timer) clearTimeout(w.timer);
    destroyPlayer();
    ui.videoStatus.textContent = 'deleted';
    ui.playerStatus.textContent = 'This video was deleted.';
    ui.playHls.disabled = true;
    ui.playDash.disabled = true;
    ui.editForm.hidden = true;
    ui.deleteForm.hidden = true;
    ui.shareBox.hidden = true;
    for (const b of [ui.share, ui.edit, ui.remove]) b.disabled = true;
  }

  // ---------- share (a signed link to the video, and until when it opens) ----------

  async function share() {
    const w = watching;
    if (!w) return;
    // The HLS master once transcoded (its token opens the whole rendition tree), the original before.
    const path = w.outputs?.hlsMaster && !w.preview ? w.outputs.hlsMaster : statusPaths.get(w.videoId);
    if (!path) return showAlert('Nothing of this video can be shared yet.');
    const answer = await api('/media/sign', { method: 'POST', json: { videoId: w.videoId, path } });
    if (watching !== w) return;
    ui.shareUrl.value = new URL(answer.url, location.href).href;
    const expires = new Date(answer.expiresAt);
    ui.shareExpiry.textContent = `Opens until ${expires.toLocaleTimeString()} (${Math.round(answer.expiresIn / 60)} min); anyone holding it can watch until then.`;
    ui.shareBox.hidden = false;
    ui.shareUrl.select();
  }

  /** Where the player manifests are: meta.outputs when the metadata says, else the renditions listing. */
  async function showPlayer(w, meta) {
    let outputs = meta.outputs ?? null;
    if (!outputs?.hlsMaster) {
      try {
        const listing = await api(await viewUrl(w, 'renditions'), { auth: false });
        outputs = { hlsMaster: listing.masterPlaylist, dashManifest: listing.dashManifest ?? outputs?.dashManifest ?? null };
      } catch (err) {
        return showAlert(`Cannot find the playlists: ${err.message}`);
      }
    }
    if (watching !== w) return;
    const fromPreview = w.preview && !meta.preview;
    w.outputs = outputs;
    w.renditions = Array.isArray(meta.renditions) ? meta.renditions : [];
    w.preview = Boolean(meta.preview);
    ui.playHls.disabled = !outputs.hlsMaster;
    ui.playDash.disabled = !outputs.dashManifest;
    if (w.preview) {
      ui.playerStatus.textContent = 'Preview ready (lowest rendition); the full ladder follows.';
      return;
    }
    if (meta.thumbnails) void loadThumbnails(w, outputs.hlsMaster, meta.thumbnails, meta.duration).catch(() => (ui.scrub.disabled = true));
    // The full ladder is published: a player still on the preview reloads onto it from where it is.
    if (fromPreview && player?.videoId === w.videoId) {
      return void (player.kind === 'hls' ? playHls : playDash)(ui.videoElement.currentTime).catch((err) => showAlert(`Playback failed: ${err.message}`));
    }
    // A second look at the metadata (another poll) while it plays: its 'Playing …' stays.
    if (player?.videoId === w.videoId) return;
    ui.playerStatus.textContent = outputs.dashManifest ? 'Ready to play.' : 'Ready to play (HLS only: no DASH manifest).';
  }

  // ---------- seek thumbnails ----------

  /**
   * `thumbnails.vtt` (cues `<sheet>.jpg?token=…#xywh=x,y,w,h`) sits beside the master, so the
   * master's token (scope: its directory) opens the index, which hands it on to every sprite sheet.
   */
  async function loadThumbnails(w, master, index, duration) {
    const token = new URL(await signedUrl(w.videoId, master), location.href).searchParams.get('token') ?? '';
    const vttUrl = new URL(`/media/videos/${encodeURIComponent(w.videoId)}/${index}`, location.href);
    vttUrl.searchParams.set('token', token);
    const res = await fetch(vttUrl);
    if (!res.ok) throw new Error(`thumbnails: HTTP ${res.status}`);
    const seconds = (t) => t.split(':').reduce((acc, x) => acc * 60 + Number(x), 0);
    const cues = [...(await res.text()).matchAll(/^([\d:.]+) --> ([\d:.]+)\r?\n(\S+)#xywh=(\d+),(\d+),(\d+),(\d+)$/gm)].map((m) => {
      const sheet = new URL(m[3], vttUrl);
      return { start: seconds(m[1]), end: seconds(m[2]), url: sheet.href, x: Number(m[4]), y: Number(m[5]), width: Number(m[6]), height: Number(m[7]) };
    });
    if (watching !== w || cues.length === 0) return;
    w.thumbnails = cues;
    ui.scrub.max = String(duration ?? cues.at(-1).end);
    ui.scrub.disabled = false;
  }

  function showThumbnail() {
    const at = Number(ui.scrub.value);
    const cue = watching?.thumbnails?.find((c) => c.start <= at && at < c.end) ?? watching?.thumbnails?.at(-1);
    if (!cue) return;
    Object.assign(ui.scrubThumb.style, {
      width: `${cue.width}px`,
      height: `${cue.height}px`,
      backgroundImage: `url("${cue.url}")`,
      backgroundPosition: `${-cue.x}px ${-cue.y}px`,
    });
    ui.scrubThumb.hidden = false;
  }

  // ---------- players ----------

  const loaded = new Map();
  function loadScript(src) {
    if (!loaded.has(src)) {
      loaded.set(src, new Promise((resolve, reject) => {
        const s = document.createElement('script');
        s.src = src;
        s.onload = () => resolve();
        s.onerror = () => reject(new Error(`could not load ${src}`));
        document.head.append(s);
      }));
    }
    return loaded.get(src);
  }

  let player = null; // { kind: 'hls' | 'dash', instance, videoId, path, resigned }

  function destroyPlayer() {
    if (!player) return;
    player.instance.destroy(); // hls.js and dash.js both release MediaSource, buffers and timers
    player = null;
    ui.videoElement.removeAttribute('src');
    ui.videoElement.load();
    ui.rendition.disabled = true;
    ui.rendition.replaceChildren(new Option('Auto', '-1'));
  }

  /**
   * A player level's label is its rendition's name as the metadata lists it (`240p`). Players only know
   * the picture height, which is not the name (a 16:9 `240p` is 416x234): the metadata lists the
   * renditions lowest first, one per distinct height whatever the codecs, so the n-th height is the n-th name.
   */
  function renditionLabel(heights, height) {
    const distinct = [...new Set(heights)].sort((a, b) => a - b);
    const names = watching?.renditions ?? [];
    return distinct.length === names.length ? names[distinct.indexOf(height)] : `${height}p`;
  }

  function fillRenditions(heights, selected) {
    player.heights = heights;
    ui.rendition.replaceChildren(new Option('Auto', '-1'), ...heights.map((h, i) => new Option(renditionLabel(heights, h), String(i))));
    ui.rendition.value = String(selected);
    ui.rendition.disabled = heights.length < 2;
  }

  function playing(height) {
    ui.playerStatus.textContent = `Playing ${player.kind.toUpperCase()}${height ? ` at ${renditionLabel(player.heights ?? [], height)}` : ''}.`;
  }

  /**
   * A signed URL lives at most TOKEN_EXPIRY_SECONDS: a long video outlives it.
   * On a 403 from a URL signed a while ago, sign again and carry on from the same
   * place; a 403 on a fresh URL is a real refusal.
   */
  async function onForbidden(p, message) {
    const fresh = Date.now() - (signed.get(`${p.videoId}/${p.path}`)?.signedAt ?? 0) < RESIGN_MARGIN_MS;
    if (fresh || p !== player) {
      ui.playerStatus.textContent = '';
      return showAlert(`Playback refused (403): ${message}`);
    }
    signed.delete(`${p.videoId}/${p.path}`);
    const at = ui.videoElement.currentTime;
    await (p.kind === 'hls' ? playHls : playDash)(at);
  }

  /**
   * The content-key URL of encrypted renditions (ClearKey, docs/api.md): beside the signed playlist,
   * with its token. Clear renditions never ask for it.
   */
  function contentKeyUrl(signedPlaylistUrl) {
    const u = new URL(signedPlaylistUrl, location.href);
    u.pathname = u.pathname.replace(/[^/]+$/, 'clearkey');
    return u.toString();
  }

  async function playHls(startAt = 0) {
    const w = watching;
    if (!w?.outputs?.hlsMaster) return;
    clearAlert();
    destroyPlayer();
    await loadScript('vendor/hls.min.js');
    const url = await signedUrl(w.videoId, w.outputs.hlsMaster);
    const video = ui.videoElement;
    if (!window.Hls.isSupported()) {
      // Safari plays HLS natively; the signed playlists carry the token to every child URI.
      video.src = url;
      return void video.play().catch(() => {});
    }
    // A short forward buffer, as dash.js keeps (12 s): on loopback hls.js would fetch a whole short
    // video at once, and a deletion or an expired token would then go unnoticed until its end.
    const hls = new window.Hls({
      startPosition: startAt > 0 ? startAt : -1,
      maxBufferLength: 12,
      maxMaxBufferLength: 12,
      emeEnabled: true,
      drmSystems: { 'org.w3.clearkey': { licenseUrl: contentKeyUrl(url) } },
    });
    const p = { kind: 'hls', instance: hls, videoId: w.videoId, path: w.outputs.hlsMaster };
    player = p;
    hls.on(window.Hls.Events.MANIFEST_PARSED, (_event, data) => {
      fillRenditions(data.levels.map((l) => l.height), -1);
      video.play().catch(() => {});
    });
    hls.on(window.Hls.Events.LEVEL_SWITCHED, (_event, data) => playing(hls.levels[data.level]?.height));
    hls.on(window.Hls.Events.ERROR, (_event, data) => {
      const status = data.response?.code;
      // Gone for good: hls.js would retry a segment's 410 as if it were passing (not fatal).
      if (status === 410) return showDeleted(watching ?? p);
      if (!data.fatal) return;
      if (status === 403) return void onForbidden(p, data.details);
      showAlert(`HLS playback failed${status ? ` (${status})` : ''}: ${data.details}`);
    });
    hls.loadSource(url);
    hls.attachMedia(video);
  }

  async function playDash(startAt = 0) {
    const w = watching;
    if (!w?.outputs?.dashManifest) return;
    clearAlert();
    destroyPlayer();
    await loadScript('vendor/dash.all.min.js');
    const url = await signedUrl(w.videoId, w.outputs.dashManifest);
    const dash = window.dashjs.MediaPlayer().create();
    const events = window.dashjs.MediaPlayer.events;
    const p = { kind: 'dash', instance: dash, videoId: w.videoId, path: w.outputs.dashManifest };
    player = p;
    dash.updateSettings({ streaming: { abr: { autoSwitchBitrate: { video: true } } } });
    dash.setProtectionData({ 'org.w3.clearkey': { serverURL: contentKeyUrl(url) } });
    dash.on(events.STREAM_INITIALIZED, () => {
      fillRenditions(dash.getRepresentationsByType('video').map((r) => r.height), -1);
    });
    dash.on(events.QUALITY_CHANGE_RENDERED, (e) => {
      if (e.mediaType === 'video') playing(e.newRepresentation?.height);
    });
    dash.on(events.ERROR, (e) => {
      const status = e.error?.data?.response?.status ?? e.error?.data?.request?.status;
      const message = e.error?.message ?? 'unknown error';
      if (status === 403 || /\b403\b/.test(message)) return void onForbidden(p, message);
      if (status === 410 || /\b410\b/.test(message)) return showDeleted(watching ?? p);
      showAlert(`DASH playback failed: ${message}`);
    });
    dash.initialize(ui.videoElement, url, true, startAt);
  }

  function chooseRendition() {
    if (!player) return;
    const index = Number(ui.rendition.value);
    if (player.kind === 'hls') {
      player.instance.currentLevel = index; // -1: automatic; else switch now (flushes the buffer)
      return;
    }
    const dash = player.instance;
    dash.updateSettings({ streaming: { abr: { autoSwitchBitrate: { video: index < 0 } } } });
    if (index >= 0) dash.setRepresentationForTypeByIndex('video', index, true);
  }

  // ---------- wiring ----------

  ui.signInForm.addEventListener('submit', (e) => {
    e.preventDefault();
    signIn(ui.token.value.trim());
  });
  ui.signOut.addEventListener('click', () => signOut());
  ui.uploadForm.addEventListener('submit', (e) => {
    e.preventDefault();
    void startUpload().catch((err) => {
      setUploadButtons('idle');
      showAlert(`Upload failed: ${err.message}`);
    });
  });
  ui.uploadPause.addEventListener('click', pauseUpload);
  ui.uploadResume.addEventListener('click', resumeUpload);
  ui.openForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const id = ui.videoId.value.trim();
    if (!UUID_RE.test(id)) return showAlert('A video ID is a UUID.');
    clearAlert();
    watch(id.toLowerCase());
  });
  const guarded = (fn) => () => void fn().catch((err) => showAlert(`Playback failed: ${err.message}`));
  ui.playHls.addEventListener('click', guarded(() => playHls()));
  ui.playDash.addEventListener('click', guarded(() => playDash()));
  ui.rendition.addEventListener('change', chooseRendition);
  // The seek bar follows playback, except while the user drags it.
  let seeking = false;
  ui.scrub.addEventListener('input', () => {
    seeking = true;
    showThumbnail();
  });
  ui.scrub.addEventListener('change', () => {
    seeking = false;
    ui.scrubThumb.hidden = true;
    if (player) ui.videoElement.currentTime = Number(ui.scrub.value);
  });
  ui.videoElement.addEventListener('loadedmetadata', () => {
    if (!Number.isFinite(ui.videoElement.duration)) return;
    ui.scrub.max = String(ui.videoElement.duration);
    ui.scrub.disabled = false;
  });
  ui.videoElement.addEventListener('timeupdate', () => {
    if (!seeking) ui.scrub.value = String(ui.videoElement.currentTime);
  });
  ui.back.addEventListener('click', () => {
    closeVideo();
    void loadLibrary(true);
  });
  ui.share.addEventListener('click', () => void share().catch((err) => showAlert(`Cannot make a share link: ${err.message}`)));
  ui.edit.addEventListener('click', openEdit);
  ui.editCancel.addEventListener('click', () => (ui.editForm.hidden = true));
  ui.editForm.addEventListener('submit', (e) => {
    e.preventDefault();
    void saveEdit();
  });
  ui.remove.addEventListener('click', () => {
    ui.editForm.hidden = true;
    ui.deleteReason.value = '';
    ui.deleteForm.hidden = false;
  });
  ui.deleteCancel.addEventListener('click', () => (ui.deleteForm.hidden = true));
  ui.deleteForm.addEventListener('submit', (e) => {
    e.preventDefault();
    void confirmDelete();
  });
  ui.libraryMore.addEventListener('click', () => void loadLibrary(false));
  ui.libraryRefresh.addEventListener('click', () => void loadLibrary(true));

  showSignedIn();
  const lastVideo = sessionStorage.getItem(VIDEO_KEY);
  if (currentToken() && lastVideo) watch(lastVideo);
})();
