// How a device looks on the map and in the list. Colour is never the only signal: the shape
// tells the kind, size and a numeral or short label tell the status (plan section 5).

// Okabe-Ito colours for the Siaga ladder (distinguishable with the common colour blindnesses);
// the official ISPU colours for air (hijau, biru, kuning, merah, hitam).
const STYLE = {
  'ok': { color: '#56B4E9', radius: 5, label: '' },
  'siaga-3': { color: '#F0E442', radius: 8, label: '3' },
  'siaga-2': { color: '#E69F00', radius: 9, label: '2' },
  'siaga-1': { color: '#D55E00', radius: 11, label: '1' },
  'baik': { color: '#2FA84F', radius: 5, label: '' },
  'sedang': { color: '#3B7DDD', radius: 6, label: '' },
  'tidak-sehat': { color: '#F2C500', radius: 8, label: 'TS' },
  'sangat-tidak-sehat': { color: '#D7261E', radius: 10, label: 'STS' },
  'berbahaya': { color: '#111111', radius: 11, label: 'B', stroke: '#FFFFFF' },
  'congested': { color: '#D55E00', radius: 8, label: '!' },
  // A camera that sees water: the Okabe-Ito blue, with a wave for a label.
  'water': { color: '#0072B2', radius: 9, label: '≈', stroke: '#FFFFFF' },
  'offline': { color: '#8A919C', radius: 5, label: '', hollow: true, dash: [3, 3] },
  'no-data': { color: '#5C6673', radius: 4, label: '', hollow: true },
};

// Shape per kind; a kind the page does not know is a diamond too.
export const SHAPES = {
  'water-level': 'triangle',
  'air-quality': 'circle',
  'traffic': 'square',
  'camera': 'diamond',
};

export const GLYPHS = { triangle: '▲', circle: '●', square: '■', diamond: '◆' };

// Which status needs eyes first: the device list sorts by it, the map draws it on top.
const RANK = {
  'berbahaya': 10, 'siaga-1': 9, 'sangat-tidak-sehat': 8, 'siaga-2': 7, 'tidak-sehat': 6,
  'water': 6, 'congested': 5, 'siaga-3': 5, 'offline': 4, 'sedang': 2, 'ok': 1, 'baik': 1, 'no-data': 0,
};

export function rank(status) {
  return RANK[status] ?? 0;
}

export function elevated(status) {
  return rank(status) >= 4;
}

export function shapeOf(kind) {
  return SHAPES[kind] ?? 'diamond';
}

export function look(kind, status) {
  const style = STYLE[status] ?? STYLE['no-data'];
  return {
    shape: shapeOf(kind),
    radius: style.radius,
    label: style.label,
    color: style.hollow ? style.color : (style.stroke ?? '#0B0F14'),
    fillColor: style.color,
    fill: !style.hollow,
    fillOpacity: style.hollow ? 0 : 0.95,
    weight: style.hollow ? 2 : 1.5,
    dash: style.dash ?? null,
    textColor: ['#111111', '#D7261E', '#D55E00', '#3B7DDD'].includes(style.color) ? '#FFFFFF' : '#111111',
  };
}

// The map's shapes on Leaflet's canvas renderer: a CircleMarker (hit-testing, styles, redraw
// batching) drawn as a triangle, square or diamond with its label. 10,000 of them redraw in
// tens of milliseconds, where 10,000 DOM markers would not.
export function shapeMarkerClass(L) {
  return L.CircleMarker.extend({
    _updatePath() {
      const renderer = this._renderer;
      if (!renderer._drawing || this._empty()) return;
      const ctx = renderer._ctx;
      const { x, y } = this._point;
      const r = Math.max(Math.round(this._radius), 1);
      ctx.beginPath();
      switch (this.options.shape) {
        case 'triangle':
          ctx.moveTo(x, y - r * 1.25);
          ctx.lineTo(x + r * 1.15, y + r * 0.8);
          ctx.lineTo(x - r * 1.15, y + r * 0.8);
          ctx.closePath();
          break;
        case 'square':
          ctx.rect(x - r * 0.9, y - r * 0.9, r * 1.8, r * 1.8);
          break;
        case 'diamond':
          ctx.moveTo(x, y - r * 1.2);
          ctx.lineTo(x + r * 1.2, y);
          ctx.lineTo(x, y + r * 1.2);
          ctx.lineTo(x - r * 1.2, y);
          ctx.closePath();
          break;
        default:
          ctx.arc(x, y, r, 0, Math.PI * 2, false);
      }
      renderer._fillStroke(ctx, this);
      const label = this.options.label;
      if (label && r >= 7) {
        ctx.fillStyle = this.options.textColor;
        ctx.font = `bold ${label.length > 1 ? 8 : 10}px system-ui, sans-serif`;
        ctx.textAlign = 'center';
        ctx.textBaseline = 'middle';
        ctx.fillText(label, x, this.options.shape === 'triangle' ? y + 1 : y);
      }
    },
  });
}
