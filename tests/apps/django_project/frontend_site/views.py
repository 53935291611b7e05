from django.http import HttpResponse
from django.urls import reverse


def index(request):
    return HttpResponse('django index script_name=%s\n' % request.META.get('SCRIPT_NAME', ''),
                        content_type='text/plain')


def hello(request, name):
    return HttpResponse('hello %s url=%s\n' % (name, reverse('hello', args=['x'])),
                        content_type='text/plain')
