// Sign-in: user name and password -> POST /api/login. The token goes to api.js (memory and
// sessionStorage), never into the URL.

import * as api from '../api.js';
import {field, h} from '../dom.js';
import {t} from '../i18n.js';

export function render({onSignedIn}) {
  const user = h('input', {type: 'text', name: 'username', autocomplete: 'username', required: true,
                           autocapitalize: 'none', spellcheck: 'false'});
  const password = h('input', {type: 'password', name: 'password', autocomplete: 'current-password',
                               required: true});
  const error = h('p', {class: 'form-error', role: 'alert', hidden: true});
  const submit = h('button', {type: 'submit', class: 'btn btn-primary', id: 'sign-in'}, t('signin.submit'));
  const form = h('form', {class: 'signin-form', novalidate: true},
    field(t('signin.user'), user).wrap,
    field(t('signin.password'), password).wrap,
    error,
    h('div', {class: 'actions'}, submit));

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    error.hidden = true;
    if (!user.value.trim() || !password.value) {
      error.textContent = t('signin.missing');
      error.hidden = false;
      (user.value.trim() ? password : user).focus();
      return;
    }
    submit.disabled = true;
    submit.textContent = t('signin.working');
    try {
      await api.login(user.value.trim(), password.value);
      password.value = '';
      await onSignedIn();
    } catch (e) {
      error.textContent = e.status === 401 ? t('signin.wrong')
        : e.status === 0 ? t('signin.network') : e.message;
      error.hidden = false;
      password.value = '';
      password.focus();
    } finally {
      submit.disabled = false;
      submit.textContent = t('signin.submit');
    }
  });

  return h('section', {class: 'signin'},
    h('div', {class: 'panel signin-panel'},
      h('h1', {}, t('signin.title')),
      h('p', {class: 'lead'}, t('signin.lead')),
      form,
      h('p', {class: 'fine'}, t('signin.note'))));
}
